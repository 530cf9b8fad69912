"""Issue 4 through real edges and real WebSocket clients: resume anywhere with a cursor,
rewind, honest `recovered`, and clear errors for bad `from` values."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mesh.cursor import Cursor, encode_cursor
from mesh.settings import MeshSettings
from mesh.streams import ensure_streams
from mesh.subjects import mirror_name
from mesh.supercluster import Supercluster
from tests.conftest import NatsClients
from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture

RETENTION = 300  # messages per channel per origin, for the expired-cursor test
SHORT = MeshSettings(max_msgs_per_channel=RETENTION)
LOOKBEHIND = 5  # dedup_lookbehind, for the retry-after-failover tests
ENV = {
    "EDGEMESH_PUBLISH_RATE_PER_S": "1000000",
    "EDGEMESH_PUBLISH_BURST": "1000000",
    "EDGEMESH_MESH_MAX_MSGS_PER_CHANNEL": str(RETENTION),
    "EDGEMESH_MESH_DEDUP_LOOKBEHIND": str(LOOKBEHIND),
    # The retry-after-failover tests need the retry stored again in another region, as it
    # is when that region's mirror does not hold the first copy yet (an origin failing
    # right after its ack): here the lookup that would acknowledge it as the first copy
    # (tests/test_mesh_elsewhere.py) is off.
    "EDGEMESH_MESH_CROSS_REGION_DEDUP": "0",
}


edges = edges_fixture(env=ENV)


async def publish_many(pub: WsClient, channel: str, tag: str, n: int) -> list[dict[str, Any]]:
    """`n` pipelined publishes with data {"tag", "i"}; returns the acks in order."""
    acks: dict[int, dict[str, Any]] = {}
    base = 10_000_000 + id(pub) % 1_000_000 * 1000

    async def read_acks() -> None:
        while len(acks) < n:
            doc = await pub.recv(60)
            if doc.get("type") in ("ack", "nack") and isinstance(doc.get("id"), int):
                acks[doc["id"] - base] = doc

    reader = asyncio.create_task(read_acks())
    for i in range(n):
        frame = {
            "type": "publish",
            "id": base + i,
            "channel": channel,
            "data": {"tag": tag, "i": i},
        }
        await pub.send(frame)
    await asyncio.wait_for(reader, 120)
    out = [acks[i] for i in range(n)]
    assert all(a["type"] == "ack" for a in out), [a for a in out if a["type"] != "ack"][:1]
    return out


def key(m: dict[str, Any]) -> tuple[str, int]:
    return m["data"]["tag"], m["data"]["i"]


async def test_resume_on_another_edge_after_500_messages_in_two_regions(
    edges: EdgeCluster,
) -> None:
    ch = "recovery:resume"
    async with WsClient.open(edges.ws_url("us", edges.token("sub"))) as sub:
        await sub.subscribe(ch)
        async with WsClient.open(edges.ws_url("eu", edges.token("warm"))) as warm:
            await publish_many(warm, ch, "warm", 3)
        seen = await sub.messages(3)
        cursor = seen[-1]["cursor"]
    # The subscriber is gone; 250 messages are published in eu and 250 in ap.
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("pub-eu"))) as pub_eu,
        WsClient.open(edges.ws_url("ap", edges.token("pub-ap"))) as pub_ap,
    ):
        acks_eu, acks_ap = await asyncio.gather(
            publish_many(pub_eu, ch, "eu", 250), publish_many(pub_ap, ch, "ap", 250)
        )
        async with WsClient.open(edges.ws_url("ap", edges.token("sub"))) as again:
            reply = await again.subscribe(ch, **{"from": {"cursor": cursor}})
            assert reply["recovered"] is True
            got = await again.messages(500)
            assert len({m["serial"] for m in got}) == 500
            assert {m["serial"] for m in got} == {a["serial"] for a in acks_eu + acks_ap}
            assert [m["data"]["i"] for m in got if m["data"]["tag"] == "eu"] == list(range(250))
            assert [m["data"]["i"] for m in got if m["data"]["tag"] == "ap"] == list(range(250))
            # Then live, with no gap: the next messages published anywhere arrive next.
            await publish_many(pub_eu, ch, "live-eu", 5)
            await publish_many(pub_ap, ch, "live-ap", 5)
            live = await again.messages(10)
            assert sorted(key(m) for m in live) == sorted(
                [("live-eu", i) for i in range(5)] + [("live-ap", i) for i in range(5)]
            )
            assert reply["cursor"] != cursor


async def test_rewind_sends_the_last_messages_first(edges: EdgeCluster) -> None:
    ch = "recovery:rewind"
    async with WsClient.open(edges.ws_url("eu", edges.token("p"))) as pub:
        acks = await publish_many(pub, ch, "r", 30)
        async with WsClient.open(edges.ws_url("us", edges.token("s"))) as sub:
            reply = await sub.subscribe(ch, **{"from": {"rewind": 10}})
            assert reply["recovered"] is True
            got = await sub.messages(10)
            assert [m["serial"] for m in got] == [a["serial"] for a in acks[-10:]]
            more = await publish_many(pub, ch, "r2", 2)
            assert [m["serial"] for m in await sub.messages(2)] == [a["serial"] for a in more]


@pytest.fixture
async def short_retention(supercluster: Supercluster, edges: EdgeCluster) -> None:
    """Streams and mirrors keep RETENTION messages per channel.

    Edges that read EDGEMESH_MESH_MAX_MSGS_PER_CHANNEL (ENV) already set it at start-up and
    this is a no-op; otherwise it applies the same retention now.
    """
    clients = NatsClients(supercluster)
    try:
        for region in supercluster.topology.names:
            nc = await clients(region)
            js = nc.jetstream(timeout=10)
            await ensure_streams(js, supercluster.topology, region, SHORT)
    finally:
        await clients.close()


async def mirror_reaches(supercluster: Supercluster, origin: str, region: str, seq: int) -> None:
    clients = NatsClients(supercluster)
    try:
        js = (await clients(region)).jetstream(timeout=5)
        for _ in range(1200):
            if (await js.stream_info(mirror_name(origin, region))).state.last_seq >= seq:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the {region} mirror of {origin} did not reach {seq}")
    finally:
        await clients.close()


async def test_cursor_older_than_retention_is_not_recovered(
    supercluster: Supercluster, edges: EdgeCluster, short_retention: None
) -> None:
    ch = "recovery:expired"
    async with WsClient.open(edges.ws_url("eu", edges.token("p"))) as pub:
        async with WsClient.open(edges.ws_url("us", edges.token("s"))) as sub:
            await sub.subscribe(ch)
            await publish_many(pub, ch, "old", 10)
            cursor = (await sub.messages(10))[-1]["cursor"]
        # RETENTION more messages push the ones after the cursor out of the stream.
        acks = await publish_many(pub, ch, "new", RETENTION + 50)
    await mirror_reaches(supercluster, "eu", "ap", int(acks[-1]["serial"].split(":")[1]))
    async with WsClient.open(edges.ws_url("ap", edges.token("s"))) as again:
        reply = await again.subscribe(ch, **{"from": {"cursor": cursor}})
        assert reply["recovered"] is False
        got = await again.messages(RETENTION)
        # What is still available is delivered: the newest RETENTION messages.
        assert [m["serial"] for m in got] == [a["serial"] for a in acks[-RETENTION:]]


@pytest.mark.parametrize(
    "bad",
    [
        {"cursor": "1AAAAAAAAAAAAAAAA"},  # corrupt
        {"cursor": "not a cursor"},
        {"cursor": encode_cursor("recovery:errors", Cursor({"mars": 5}))},  # unknown region
        {"cursor": encode_cursor("another-channel", Cursor({"eu": 5}))},
        {"cursor": encode_cursor("recovery:errors", Cursor({"eu": 10**9}))},  # ahead
        {"rewind": -1},
        {"rewind": 10**9},
        {"rewind": "5"},
        {"sideways": 1},
    ],
)
async def test_bad_from_gets_a_clear_error_and_the_connection_stays(
    edges: EdgeCluster, bad: dict[str, Any]
) -> None:
    async with WsClient.open(edges.ws_url("eu", edges.token("e"))) as pub:
        await publish_many(pub, "recovery:errors", "x", 1)  # the channel has history
    async with WsClient.open(edges.ws_url("us", edges.token("e"))) as c:
        reply = await c.request({"type": "subscribe", "channel": "recovery:errors", "from": bad})
        assert reply["type"] == "error" and reply["error"]["code"] == 40000, reply
        assert reply["error"]["message"]
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        ok = await c.subscribe("recovery:errors")
        assert ok["type"] == "subscribed"
        json.dumps(ok)


async def publish_id(edges: EdgeCluster, region: str, channel: str, message_id: str) -> Any:
    async with WsClient.open(edges.ws_url(region, edges.token("payer"))) as pub:
        ack = await pub.request(
            {"type": "publish", "channel": channel, "data": message_id, "message_id": message_id}
        )
    assert ack["type"] == "ack", ack
    return ack


def seq(ack: dict[str, Any]) -> int:
    return int(ack["serial"].split(":")[1])


async def seen_then_retried(
    supercluster: Supercluster, edges: EdgeCluster, ch: str, filler: int, tag: str
) -> str:
    """A subscriber in eu sees `<tag>-1` and `filler` messages after it, then goes away;
    the publisher, failed over to us, retries `<tag>-1` there (stored again: a new serial)
    and publishes `<tag>-2`. Returns the subscriber's cursor. (JetStream dedups ids per
    stream, not per channel: each test uses its own ids.)"""
    async with WsClient.open(edges.ws_url("eu", edges.token("sub"))) as sub:
        await sub.subscribe(ch)
        await publish_id(edges, "eu", ch, f"{tag}-1")
        async with WsClient.open(edges.ws_url("eu", edges.token("p"))) as pub:
            acks = await publish_many(pub, ch, "f", filler)
        cursor: str = (await sub.messages(1 + filler))[-1]["cursor"]
    retry = await publish_id(edges, "us", ch, f"{tag}-1")
    assert retry["serial"].startswith("us:") and retry["duplicate"] is False
    await publish_id(edges, "us", ch, f"{tag}-2")
    await mirror_reaches(supercluster, "eu", "us", seq(acks[-1]))
    return cursor


async def test_a_retry_seen_before_the_cursor_is_not_delivered_again(
    supercluster: Supercluster, edges: EdgeCluster
) -> None:
    """PROTOCOL: delivered once. The subscriber had `pay-1` (eu) before its cursor; its
    retry stored in us is neither replayed nor delivered live, nor shown twice in history
    paged one message at a time."""
    ch = "recovery:retry"
    # pay-1 is the LOOKBEHIND-th newest message at the cursor: just within the look-behind.
    cursor = await seen_then_retried(supercluster, edges, ch, LOOKBEHIND - 1, "pay")
    async with WsClient.open(edges.ws_url("us", edges.token("sub"))) as again:
        await again.subscribe(ch, **{"from": {"cursor": cursor}})
        assert [m["id"] for m in await again.messages(1)] == ["pay-2"]
        # Live: retries of both in a third region are not delivered; a new message is.
        in_ap = [await publish_id(edges, "ap", ch, i) for i in ("pay-1", "pay-2", "pay-3")]
        assert all(a["serial"].startswith("ap:") and not a["duplicate"] for a in in_ap)
        assert [m["id"] for m in await again.messages(1)] == ["pay-3"]
    await mirror_reaches(supercluster, "us", "ap", 2)
    ids: list[str] = []
    after: str | None = None
    async with WsClient.open(edges.ws_url("ap", edges.token("reader"))) as reader:
        while True:
            page = await reader.request(
                {"type": "history", "channel": ch, "limit": 1} | ({"after": after} if after else {})
            )
            if not page["messages"]:
                break
            ids += [m["id"] for m in page["messages"]]
            after = page["cursor"]
    assert ids[0] == "pay-1" and ids[-2:] == ["pay-2", "pay-3"], ids
    assert len(ids) == len(set(ids)) == LOOKBEHIND + 2, ids


async def test_a_retry_beyond_the_look_behind_is_replayed(
    supercluster: Supercluster, edges: EdgeCluster
) -> None:
    """The boundary of `dedup_lookbehind`: with one more message after `far-1`, the
    look-behind (the newest LOOKBEHIND messages at the cursor) no longer reaches `far-1`,
    and its retry is replayed (the documented limit)."""
    ch = "recovery:retry-far"
    cursor = await seen_then_retried(supercluster, edges, ch, LOOKBEHIND, "far")
    capped = edges.metrics("us").get("edgemesh_dedup_lookbehind_capped_total", 0)
    async with WsClient.open(edges.ws_url("us", edges.token("sub"))) as again:
        await again.subscribe(ch, **{"from": {"cursor": cursor}})
        assert [m["id"] for m in await again.messages(2)] == ["far-1", "far-2"]
    # operators can see that the cap was hit
    assert edges.metrics("us")["edgemesh_dedup_lookbehind_capped_total"] > capped
