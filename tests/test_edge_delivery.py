"""Delivery across regions through real edges: completeness, order, races, slow consumers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture
from tests.rawws import masked_frame, take_frames, upgrade_request, upgrade_response

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


async def test_connections_churning_during_fan_out_get_only_their_own_frames(
    edges: EdgeCluster,
) -> None:
    """Connections come and go on the eu edge while a channel's messages fan out there
    (the direct path writes each delivery to a copy of the socket's fd). A new
    connection, which often gets the fd number of one just gone, must see its 101
    first, then `connected`, then nothing of a channel it did not subscribe to; one
    that did subscribe gets its messages in order; the subscriber that stays gets
    everything. (The narrow window where a stale fd number could be written to is
    tested deterministically in tests/test_edge_fanout.py; this is the end-to-end
    check of isolation under churn.)"""
    n = 400
    edge = edges.edge("eu").edge
    loop = asyncio.get_running_loop()
    checked = {"quiet": 0, "churn": 0}

    async def churn_one(i: int) -> None:
        reader, writer = await asyncio.open_connection(edge.host, edge.port)
        try:
            writer.write(upgrade_request(edge.host, edge.port, edges.token(f"churn-{i}")))
            buf = bytearray()
            while (head := upgrade_response(buf)) is None:
                data = await asyncio.wait_for(reader.read(65536), 20)
                assert data, "closed before the 101"
                buf += data
            assert head.startswith(b"HTTP/1.1 101"), head[:80]
            channel = "churn" if i % 2 else "quiet"
            sub = {"type": "subscribe", "id": 1, "channel": channel}
            writer.write(masked_frame(json.dumps(sub).encode()))
            # Read what comes for a moment (a window to look through, not a wait for a
            # result: every frame that arrives is checked, however many).
            frames: list[tuple[int, bytes]] = take_frames(buf)
            # `connected` comes first, whenever a busy machine gets it here; then the window.
            while not any(opcode == 0x1 for opcode, _ in frames):
                data = await asyncio.wait_for(reader.read(65536), 20)
                assert data, "closed before `connected`"
                buf += data
                frames += take_frames(buf)
            until = loop.time() + 0.02 * (i % 5 + 1)
            while (left := until - loop.time()) > 0:
                try:
                    data = await asyncio.wait_for(reader.read(65536), left)
                except TimeoutError:
                    break
                if not data:
                    break
                buf += data
                frames += take_frames(buf)
            docs = [json.loads(payload) for opcode, payload in frames if opcode == 0x1]
            assert docs and docs[0]["type"] == "connected", docs[:2]
            got = [d["data"] for d in docs if d["type"] == "message"]
            if channel == "quiet":
                assert got == [], f"connection {i} got another channel's messages"
            else:
                assert got == sorted(got) and all(d["channel"] == "churn" for d in docs[2:])
            checked[channel] += 1
        finally:
            if i % 3:
                writer.transport.abort()  # a reset, mid-stream
            else:
                writer.close()

    async def churner(k: int) -> None:
        for i in range(25):
            await churn_one(k * 100 + i)

    async with (
        WsClient.open(edges.ws_url("eu", edges.token("churn-steady"))) as steady,
        WsClient.open(edges.ws_url("eu", edges.token("churn-pub"))) as pub,
    ):
        await steady.subscribe("churn")
        receiver = asyncio.create_task(steady.messages(n, within=120))
        churners = asyncio.gather(*(churner(k) for k in range(8)))
        acks = await publish_all(pub, "churn", list(range(n)), per_s=200)
        await asyncio.wait_for(churners, 120)
        assert all(a["type"] == "ack" for a in acks)
        assert [m["data"] for m in await receiver] == list(range(n))
    assert checked == {"quiet": 8 * 13, "churn": 8 * 12}  # every connection was checked


async def until_counted(edges: EdgeCluster, key: str, base: float, within: float = 120) -> None:
    """Until the eu edge's metric `key` is above `base` (polled without blocking)."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            text = (await http.get(f"{edges.url('eu')}/metrics")).text
            value = next(
                (
                    float(ln.rpartition(" ")[2])
                    for ln in text.splitlines()
                    if ln.startswith(key + " ")
                ),
                0.0,
            )
            if value > base:
                return
            assert time.monotonic() < deadline, f"{key} stayed at {value}"
            await asyncio.sleep(0.05)


async def test_stalled_subscriber_is_cut_while_100_others_get_everything(
    edges: EdgeCluster,
) -> None:
    n, size = 300, 16 * 1024  # ~4.8 MB per subscriber: past the kernel's own buffers
    blob = "x" * size
    url = edges.ws_url("eu", edges.token("fan"))
    key = "edgemesh_slow_consumer_disconnects_total"
    reason = 'edgemesh_disconnects_total{reason="slow_consumer"}'
    spills = "edgemesh_fanout_spills_total"
    before = edges.metrics("eu")
    # The stalled client: the library stops reading from the socket once 1 frame waits.
    async with connect(url, max_queue=1, compression=None, max_size=None) as stalled:
        assert json.loads(await stalled.recv())["type"] == "connected"
        await stalled.send(json.dumps({"type": "subscribe", "id": 1, "channel": "fan"}))
        assert json.loads(await stalled.recv())["type"] == "subscribed"

        async def read_after_the_cut() -> tuple[list[dict[str, Any]], ConnectionClosed]:
            # The edge writes `disconnect` and the close frame behind the backlog the
            # client has not read, and aborts the connection if they are not taken
            # within its 2 s close grace: so the stalled client starts reading as soon
            # as the edge counts the cut (not earlier, or it would not be stalled).
            await until_counted(edges, key, before.get(key, 0))
            frames: list[dict[str, Any]] = []
            try:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(stalled.recv(), 60)))
            except ConnectionClosed as closed:
                return frames, closed

        cut = asyncio.create_task(read_after_the_cut())
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
        # The stalled connection got a prefix of the messages, then `disconnect`
        # (slow_consumer) as its last frame, then the close 1013.
        frames, closed = await asyncio.wait_for(cut, 120)
        prefix = [f["data"][0] for f in frames if f["type"] == "message"]
        assert prefix == list(range(len(prefix))) and len(prefix) < n
        assert frames[-1]["type"] == "disconnect", frames[-3:]
        assert frames[-1]["reason"] == "slow_consumer" and frames[-1]["reconnect"] is True
        assert closed.rcvd is not None and closed.rcvd.code == 1013, closed
        assert closed.rcvd.reason == "slow_consumer"
    # Exactly one connection of this edge was cut, counted once (the 100 got everything).
    after = edges.metrics("eu")
    assert after[key] - before.get(key, 0) == 1
    assert after[reason] - before.get(reason, 0) == 1
    # It left the direct write path when the kernel stopped taking its frames.
    assert after[spills] - before.get(spills, 0) >= 1
