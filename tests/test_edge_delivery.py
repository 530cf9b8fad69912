"""Delivery across regions through real edges: completeness, order, races, slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture

ENV = {
    "EDGEMESH_PUBLISH_RATE_PER_S": "1000000",
    "EDGEMESH_PUBLISH_BURST": "1000000",
    "EDGEMESH_MAX_SEND_BUFFER_BYTES": "65536",
    "EDGEMESH_MAX_CHANNELS_PER_CONNECTION": "1000",
}


edges = edges_fixture(env=ENV)


async def publish_all(
    pub: WsClient, channel: str, payloads: list[Any], per_s: float | None = None
) -> list[dict[str, Any]]:
    """Pipelined publishes (no waiting for acks), at most `per_s` a second when given;
    returns the acks in request order."""
    acks: dict[int, dict[str, Any]] = {}
    n = len(payloads)

    async def read_acks() -> None:
        while len(acks) < n:
            doc = json.loads(await asyncio.wait_for(pub.ws.recv(), 60))
            if doc["type"] in ("ack", "nack"):
                acks[doc["id"]] = doc

    reader = asyncio.create_task(read_acks())
    start = time.monotonic()
    for i, data in enumerate(payloads):
        if per_s is not None:  # pacing: the publisher's rate, not a wait for anything
            await asyncio.sleep(max(0.0, start + i / per_s - time.monotonic()))
        await pub.send({"type": "publish", "id": i, "channel": channel, "data": data})
    await asyncio.wait_for(reader, 120)
    return [acks[i] for i in range(n)]


async def test_ten_thousand_messages_reach_three_regions_in_order(edges: EdgeCluster) -> None:
    n = 10_000
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("s-eu"))) as s_eu,
        WsClient.open(edges.ws_url("us", edges.token("s-us"))) as s_us,
        WsClient.open(edges.ws_url("ap", edges.token("s-ap"))) as s_ap,
        WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub,
    ):
        subs = [s_eu, s_us, s_ap]
        for s in subs:
            await s.subscribe("bulk")
        receivers = [asyncio.create_task(s.messages(n, within=180)) for s in subs]
        acks = await publish_all(pub, "bulk", list(range(n)))
        assert [a["type"] for a in acks] == ["ack"] * n
        seqs = [int(a["serial"].split(":")[1]) for a in acks]
        assert seqs == sorted(seqs) and len(set(seqs)) == n  # stored in publish order
        for s, task in zip(subs, receivers, strict=True):
            got = await task
            assert [m["data"] for m in got] == list(range(n)), s.connected["region"]
            assert [m["serial"] for m in got] == [a["serial"] for a in acks]
        # and nothing more: the next message on the channel is the sentinel
        await pub.request({"type": "publish", "channel": "bulk", "data": "end"})
        for s in subs:
            (last,) = await s.messages(1)
            assert last["data"] == "end"


async def test_subscribe_in_us_then_publish_in_eu_loses_nothing(edges: EdgeCluster) -> None:
    trials = 200
    async with (
        WsClient.open(edges.ws_url("us", edges.token("race-sub"))) as sub,
        WsClient.open(edges.ws_url("eu", edges.token("race-pub"))) as pub,
    ):
        for i in range(trials):
            channel = f"race:{i}"
            await sub.subscribe(channel)
            await pub.send({"type": "publish", "channel": channel, "data": i})
        got = await sub.messages(trials, within=120)
        assert sorted(m["data"] for m in got) == list(range(trials))


async def test_stalled_subscriber_is_cut_while_100_others_get_everything(
    edges: EdgeCluster,
) -> None:
    n, size = 300, 16 * 1024  # ~4.8 MB per subscriber: past the kernel's own buffers
    blob = "x" * size
    url = edges.ws_url("eu", edges.token("fan"))
    before = edges.metrics("eu")
    # The stalled client: the library stops reading from the socket once 1 frame waits.
    async with connect(url, max_queue=1, compression=None, max_size=None) as stalled:
        assert json.loads(await stalled.recv())["type"] == "connected"
        await stalled.send(json.dumps({"type": "subscribe", "id": 1, "channel": "fan"}))
        assert json.loads(await stalled.recv())["type"] == "subscribed"
        async with contextlib.AsyncExitStack() as stack:
            others = [await stack.enter_async_context(WsClient.open(url)) for _ in range(100)]
            for c in others:
                await c.subscribe("fan")
            receivers = [asyncio.create_task(c.messages(n, within=240)) for c in others]
            async with WsClient.open(edges.ws_url("eu", edges.token("fan-pub"))) as pub:
                # At 60/s (~1 MB/s per reader) the 100 readers of this one test process
                # keep up; the stalled one falls behind by everything.
                acks = await publish_all(pub, "fan", [[i, blob] for i in range(n)], per_s=60)
            assert all(a["type"] == "ack" for a in acks)
            for task in receivers:
                got = await task
                assert [m["data"][0] for m in got] == list(range(n))
        # The stalled client was cut: reading now ends in a close, after a disconnect
        # frame when the edge's grace period had not yet run out.
        frames: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                frames.append(json.loads(await asyncio.wait_for(stalled.recv(), 30)))
        assert len([f for f in frames if f["type"] == "message"]) < n
        disconnects = [f for f in frames if f["type"] == "disconnect"]
        assert all(f["reason"] == "slow_consumer" for f in disconnects)
    after = edges.metrics("eu")
    key = "edgemesh_slow_consumer_disconnects_total"
    assert after[key] - before.get(key, 0) == 1
    reason = 'edgemesh_disconnects_total{reason="slow_consumer"}'
    assert after[reason] - before.get(reason, 0) == 1
