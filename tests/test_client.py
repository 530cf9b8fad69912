"""The Python client (client/) against a real supercluster and real edges: publish and
subscribe, typed errors, and what it is for: an edge shut down or killed, a token that
expires, a region that refuses. Every message is received once, in order.

The tests that stop an edge start it again before they end (the edges are shared by
the module)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from client import (
    Client,
    ClientError,
    ClientSettings,
    Message,
    PublishTimeout,
    ServerError,
    Subscription,
)
from client.errors import CONNECT_TIMEOUT, UNAUTHORIZED
from mesh.process import FreePorts
from tests.edge_fixture import EdgeCluster, edges_fixture, restart_edge

SLOW_CUT_BYTES = 64 * 1024  # the ap edge cuts a slow consumer early (the default is 1 MiB)
edges = edges_fixture(
    env={"EDGEMESH_PUBLISH_RATE_PER_S": "1000000", "EDGEMESH_PUBLISH_BURST": "1000000"},
    region_env={"ap": {"EDGEMESH_MAX_SEND_BUFFER_BYTES": str(SLOW_CUT_BYTES)}},
)
FAST = ClientSettings(reconnect_base_s=0.05, reconnect_max_s=0.5, open_timeout_s=3.0)


def urls(edges: EdgeCluster, *regions: str) -> dict[str, list[str]]:
    return {r: [edges.edge(r).ws_url] for r in regions}


async def take(sub: Subscription, n: int, within_s: float = 30.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + within_s
    while len(out) < n:
        out.append(await sub.next(max(0.01, deadline - time.monotonic())))
    return out


@pytest.fixture
async def client_for(edges: EdgeCluster) -> AsyncIterator[Callable[..., Any]]:
    """Start a Client; every one started is closed at the end of the test."""
    made: list[Client] = []

    async def make(*regions: str, **options: Any) -> Client:
        options.setdefault("settings", FAST)
        token = options.pop("token", None) or edges.token(options.pop("client_id", "t"))
        c = Client(token, regions=urls(edges, *regions), **options)
        made.append(c)
        await c.start()
        return c

    yield make
    for c in made:
        await c.close()


async def test_publish_subscribe_and_history(client_for: Callable[..., Any]) -> None:
    sub_client = await client_for("us")
    pub = await client_for("eu")
    assert sub_client.connection.region == "us" and pub.connection.region == "eu"
    sub = await sub_client.subscribe("client:basic")
    acks = [await pub.publish("client:basic", {"i": i}, name="n") for i in range(50)]
    assert all(a.serial.startswith("eu:") and not a.duplicate for a in acks)
    got = await take(sub, 50)
    assert [m.data["i"] for m in got] == list(range(50))
    assert [m.id for m in got] == [a.message_id for a in acks]
    assert sub.cursor == got[-1].cursor
    page = await sub_client.history("client:basic", limit=100)
    assert [m.serial for m in page.messages] == [a.serial for a in acks]
    # The same message_id again: acked as the first, delivered once.
    again = await pub.publish("client:basic", {"i": 0}, message_id=acks[0].message_id)
    assert again.duplicate and again.serial == acks[0].serial
    marker = await pub.publish("client:basic", "end")
    assert (await sub.next(10)).id == marker.message_id


async def test_bad_requests_get_typed_errors_and_harm_nothing(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    limited = edges.token("lim", caps={"ok:*": ["subscribe", "publish", "history"]})
    c = await client_for("eu", token=limited)
    sub = await c.subscribe("ok:live")
    with pytest.raises(ServerError) as err:
        await c.publish("a b", 1)
    assert err.value.code == 40001
    with pytest.raises(ServerError) as err:
        await c.publish("secret", 1)
    assert err.value.code == 40300
    with pytest.raises(ServerError) as err:
        await c.subscribe("secret")
    assert err.value.code == 40300
    with pytest.raises(ServerError) as err:
        await c.publish("ok:live", "x" * (c.connection.max_message_bytes + 1))
    assert err.value.code == 41300
    # The same connection still works, and the subscription was not touched.
    assert c.connections == 1
    ack = await c.publish("ok:live", "fine")
    assert (await sub.next(10)).id == ack.message_id
    # The size limit at its boundary, measured as the edge measures it (compact UTF-8
    # JSON: a string's quotes count). Far over it, the client refuses before sending: the
    # edge would close the connection (4009) for such a frame.
    limit = c.connection.max_message_bytes
    at = await c.publish("ok:live", "y" * (limit - 2))
    assert (await sub.next(10)).id == at.message_id
    with pytest.raises(ServerError) as err:
        await c.publish("ok:live", "y" * (limit - 1))
    assert err.value.code == 41300
    with pytest.raises(ServerError) as err:
        await c.publish("ok:live", "z" * (limit + 20_000))
    assert err.value.code == 41300
    # Non-ASCII text near the limit goes as UTF-8 (escaped, it would be twice the size
    # and over the frame limit).
    kanji = "日" * ((limit - 2) // 3)
    ack = await c.publish("ok:live", kanji)
    assert (await sub.next(10)).data == kanji
    assert c.connections == 1


async def test_no_edge_to_connect_to_and_a_refused_token(edges: EdgeCluster) -> None:
    free = FreePorts()()
    nobody = Client(
        "t",
        urls=[f"ws://127.0.0.1:{free}/v1/connect"],
        settings=ClientSettings(connect_timeout_s=0.5, reconnect_base_s=0.05),
    )
    with pytest.raises(ClientError) as err:
        await nobody.start()
    assert err.value.code == CONNECT_TIMEOUT and nobody.state == "closed"
    expired = edges.token("old", now=time.time() - 7200, ttl_s=60)
    refused = Client(expired, urls=[edges.edge("eu").ws_url], settings=FAST)
    with pytest.raises(ClientError) as err:
        await refused.start()
    assert err.value.code == UNAUTHORIZED and refused.state == "failed"
    with pytest.raises(ClientError):
        await refused.publish("x", 1)


async def test_subscriber_follows_a_shut_down_edge_to_another_region(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    """SIGTERM on the us edge: its `disconnect` names the fallback regions; the client goes
    to ap and resumes from its cursor: every message once, in order."""
    ch = "client:drain"
    states: list[str] = []
    sub_client = await client_for("us", "ap", on_state=states.append)
    pub = await client_for("eu")
    sub = await sub_client.subscribe(ch)
    n, half = 300, 100
    sent: list[str] = []

    async def publish_all() -> None:
        for i in range(n):
            sent.append((await pub.publish(ch, i)).message_id)
            await asyncio.sleep(0.005)

    publishing = asyncio.create_task(publish_all())
    got = await take(sub, half)
    edges.edge("us").process.signal(signal.SIGTERM)
    got += await take(sub, n - half, within_s=60)
    await publishing
    try:
        assert [m.data for m in got] == list(range(n))
        assert [m.id for m in got] == sent
        assert sub_client.connections == 2 and sub_client.connection.region == "ap"
        assert sub.resumes == 1 and sub.discontinuities == 0
        assert states == ["connecting", "connected", "connecting", "connected"]
    finally:
        await restart_edge(edges, "us")


async def test_publisher_survives_its_edge_being_killed(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    """SIGKILL on the eu edge while a client publishes: every publish() returns an ack
    (from eu or from us after the reconnect); each message reaches a subscriber once."""
    ch = "client:kill"
    sub_client = await client_for("ap")
    pub = await client_for("eu", "us")
    sub = await sub_client.subscribe(ch)
    n = 300
    acks = []
    try:
        for i in range(n):
            if i == 100:
                edges.edge("eu").process.kill()
            acks.append(await pub.publish(ch, i))
        got = await take(sub, n, within_s=60)
        assert [m.data for m in got] == list(range(n))
        assert len({m.id for m in got}) == n
        assert pub.connections == 2 and pub.connection.region == "us"
        assert {a.serial.split(":")[0] for a in acks} == {"eu", "us"}
    finally:
        await restart_edge(edges, "eu")


async def test_expired_token_is_replaced_and_the_subscription_resumes(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    ch = "client:token"
    minted = 0

    async def fresh_token() -> str:
        nonlocal minted
        minted += 1
        return edges.token("rotating", ttl_s=2)

    sub_client = await client_for("us", token=fresh_token)
    pub = await client_for("eu")
    sub = await sub_client.subscribe(ch)
    sent = []
    deadline = time.monotonic() + 30
    # Publish until the subscriber has been cut for its token at least once.
    while sub_client.connections < 2 or len(sent) < 20:
        assert time.monotonic() < deadline, "the token never expired"
        sent.append((await pub.publish(ch, len(sent))).message_id)
        await asyncio.sleep(0.05)
    # A few more once the new connection is made: they reach the subscriber only through
    # its subscription resumed there.
    for _ in range(5):
        sent.append((await pub.publish(ch, len(sent))).message_id)
    got = await take(sub, len(sent))
    assert [m.id for m in got] == sent
    assert minted >= 2 and sub.resumes >= 1 and sub.discontinuities == 0


async def edgemesh(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh.cli",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_sub_and_pub_commands(edges: EdgeCluster) -> None:
    eu, us = edges.edge("eu").ws_url, edges.edge("us").ws_url
    code, out, err = await edgemesh(
        "pub", "client:cli", '{"k": 1}', "--name", "n", "--url", eu, "--key", edges.api_key
    )
    assert code == 0, err
    ack = json.loads(out)
    assert ack["serial"].startswith("eu:") and ack["duplicate"] is False
    code, out, err = await edgemesh(
        "sub", "client:cli", "--rewind", "1", "--count", "1", "--url", us, "--key", edges.api_key
    )
    assert code == 0, err
    [m] = [json.loads(line) for line in out.splitlines()]
    assert (m["serial"], m["id"], m["name"], m["data"]) == (
        ack["serial"],
        ack["message_id"],
        "n",
        {"k": 1},
    )
    # A refusal from the server: exit 1, its code on one line.
    limited = edges.token("cli", caps={"other:*": ["publish"]})
    code, out, err = await edgemesh("pub", "client:cli", "1", "--url", eu, "--token", limited)
    assert code == 1 and out == "" and "edgemesh pub: 40300" in err, err


async def test_publish_and_request_timeouts_and_recovery(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    """The eu edge is stopped (SIGSTOP) under a connected client: a publish raises
    PublishTimeout after publish_timeout_s (not before), history raises request_timeout;
    once the edge runs again (SIGCONT), the same client publishes."""
    settings = ClientSettings(
        publish_timeout_s=1.0, request_timeout_s=1.0, ping_interval_s=30, ping_timeout_s=30
    )
    c = await client_for("eu", settings=settings)
    proc = edges.edge("eu").process
    proc.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(PublishTimeout) as err:
            await c.publish("client:stopped", 1, message_id="late-1")
        took = time.monotonic() - t0
        assert err.value.code == "publish_timeout" and err.value.message_id == "late-1"
        assert 1.0 <= took < 3.0, took  # fired at the timeout, not long after
        with pytest.raises(ClientError) as req:
            await c.history("client:stopped")
        assert req.value.code == "request_timeout"
    finally:
        proc.signal(signal.SIGCONT)
    ack = await c.publish("client:stopped", 2)
    assert ack.serial.startswith("eu:") and c.connections == 1


async def test_a_full_subscription_pauses_reading_and_loses_nothing(
    client_for: Callable[..., Any],
) -> None:
    """max_buffered_messages = 5: the client holds at most 5 untaken messages and stops
    reading the connection; taken one by one later, all 300 arrive, in order."""
    settings = ClientSettings(max_buffered_messages=5, reconnect_base_s=0.05)
    reader = await client_for("us", settings=settings)
    pub = await client_for("eu")
    sub = await reader.subscribe("client:full")
    for i in range(300):
        await pub.publish("client:full", i)
    marker = await pub.publish("client:full", "end")
    # The buffer fills to its limit and stays there while nobody takes from it.
    deadline = time.monotonic() + 10
    while sub.buffered < 5:
        assert time.monotonic() < deadline, sub.buffered
        await asyncio.sleep(0.01)
    got = [await sub.next(10) for _ in range(301)]
    assert [m.data for m in got[:300]] == list(range(300)) and got[300].id == marker.message_id
    assert sub.most_buffered == 5  # reached, never passed


async def test_a_slow_consumer_cut_reconnects_to_the_same_region(
    edges: EdgeCluster, client_for: Callable[..., Any]
) -> None:
    """A subscriber that stops reading is cut by its edge (ap) as a slow consumer. That
    `disconnect` names fallback regions too, but it is about the connection, not the edge:
    the client reconnects to ap again (not us), resumes, and gets every message once."""
    settings = ClientSettings(max_buffered_messages=5, reconnect_base_s=0.05)
    reader = await client_for("ap", "us", settings=settings)
    pub = await client_for("eu")
    sub = await reader.subscribe("client:slow")
    key = "edgemesh_slow_consumer_disconnects_total"
    cut_before = edges.metrics("ap").get(key, 0.0)
    big = "x" * 8000
    sent: list[str] = []
    deadline = time.monotonic() + 60
    # Publish until ap cuts the reader (the kernel's socket buffers fill first).
    while edges.metrics("ap").get(key, 0.0) == cut_before:
        assert time.monotonic() < deadline, f"not cut after {len(sent)} messages"
        for _ in range(100):
            sent.append((await pub.publish("client:slow", {"i": len(sent), "pad": big})).message_id)
    got = [await sub.next(30) for _ in sent]
    assert [m.data["i"] for m in got] == list(range(len(sent)))
    assert [m.id for m in got] == sent
    assert reader.connection is not None and reader.connection.region == "ap"
    assert reader.connections == 2 and sub.resumes == 1 and sub.discontinuities == 0
