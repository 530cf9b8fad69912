"""Protocol v1 on real edges: frames, auth, every error code, limits, REST, metrics.

One supercluster and one edge per region for the module. The eu edge has the default
limits; the ap edge has tight ones (to reach each limit's boundary quickly); the us
edge accepts messages larger than NATS's max_payload (to provoke an internal error).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as sync_connect

from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture
from tests.rawws import masked_frame, take_frames, upgrade_request, upgrade_response

AP_LIMITS = {
    "EDGEMESH_MAX_CONNECTIONS": "4",
    "EDGEMESH_MAX_CHANNELS_PER_CONNECTION": "3",
    "EDGEMESH_PUBLISH_RATE_PER_S": "0.1",
    "EDGEMESH_PUBLISH_BURST": "3",
    "EDGEMESH_RATE_STRIKES": "4",
    "EDGEMESH_RATE_STRIKE_WINDOW_S": "60",
    "EDGEMESH_MAX_MESSAGE_BYTES": "100",
    "EDGEMESH_MAX_FRAME_BYTES": "1000",
    "EDGEMESH_MAX_NAME_BYTES": "10",
    "EDGEMESH_MAX_MESSAGE_ID_BYTES": "8",
    "EDGEMESH_MAX_REQUEST_ID_BYTES": "6",
    "EDGEMESH_MESH_MAX_HISTORY_LIMIT": "5",
    "EDGEMESH_MAX_TOKEN_TTL_S": "60",
}
US_LIMITS = {"EDGEMESH_MAX_MESSAGE_BYTES": "1500000", "EDGEMESH_MAX_FRAME_BYTES": "1600000"}


edges = edges_fixture(region_env={"ap": AP_LIMITS, "us": US_LIMITS})


async def closed_with(client: WsClient) -> tuple[int | None, list[dict[str, Any]]]:
    """Frames until the server closes, and its close code."""
    frames: list[dict[str, Any]] = list(client.backlog)
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(client.ws.recv(), 20)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), frames


async def test_connected_ping_subscribe_publish_unsubscribe(edges: EdgeCluster) -> None:
    async with WsClient.open(edges.ws_url("eu", edges.token("alice"))) as c:
        hello = c.connected
        assert hello["client_id"] == "alice" and hello["region"] == "eu"
        assert hello["edge"] == "eu-e1" and hello["max_message_bytes"] == 65536
        assert hello["connection_id"].startswith("c-") and hello["heartbeat_interval_s"] == 15
        assert hello["fallback_regions"] == ["us", "ap"]
        pong = await c.request({"type": "ping"})
        assert pong["type"] == "pong" and isinstance(pong["id"], int)
        sub = await c.subscribe("chat:lobby")
        assert sub["channel"] == "chat:lobby" and isinstance(sub["cursor"], str)
        ack = await c.request(
            {"type": "publish", "channel": "chat:lobby", "data": {"text": "hi"}, "name": "say"}
        )
        assert ack["type"] == "ack" and ack["serial"].startswith("eu:") and not ack["duplicate"]
        (msg,) = await c.messages(1)
        assert msg["data"] == {"text": "hi"} and msg["name"] == "say"
        assert msg["client_id"] == "alice" and msg["region"] == "eu"
        assert msg["serial"] == ack["serial"] and msg["id"] == ack["message_id"]
        assert isinstance(msg["timestamp"], int) and isinstance(msg["cursor"], str)
        reply = await c.request({"type": "unsubscribe", "channel": "chat:lobby"})
        assert reply["type"] == "unsubscribed" and reply["channel"] == "chat:lobby"


class RawClient:
    """A bare WebSocket client that writes any bytes at once (several frames in one
    write, read by the edge together) and reads every text frame in arrival order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buf = bytearray()
        self.pending: collections.deque[dict[str, Any]] = collections.deque()

    @classmethod
    async def open(cls, edges: EdgeCluster, client_id: str) -> RawClient:
        edge = edges.edge("eu").edge
        reader, writer = await asyncio.open_connection(edge.host, edge.port)
        client = cls(reader, writer)
        writer.write(upgrade_request(edge.host, edge.port, edges.token(client_id)))
        while (head := upgrade_response(client.buf)) is None:
            client.buf += await asyncio.wait_for(reader.read(65536), 10)
        assert b" 101 " in head
        assert (await client.next())["type"] == "connected"
        return client

    def send(self, *frames: dict[str, Any]) -> None:
        self.writer.write(b"".join(masked_frame(json.dumps(f).encode()) for f in frames))

    async def next(self) -> dict[str, Any]:
        while True:
            for opcode, payload in take_frames(self.buf):
                if opcode == 0x1:
                    self.pending.append(json.loads(payload))
            if self.pending:
                return self.pending.popleft()
            self.buf += await asyncio.wait_for(self.reader.read(65536), 10)

    async def until(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while not done(got):
            got.append(await self.next())
        return got

    def close(self) -> None:
        self.writer.close()


def replies_to(frames: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(type, id) of each reply (a delivered message's id is its message id: left out)."""
    return [(f["type"], f["id"]) for f in frames if "id" in f and f["type"] != "message"]


async def test_frames_read_together_are_handled_in_order(edges: EdgeCluster) -> None:
    """A frame that needs no waiting is handled the moment it is read, but never ahead
    of one before it: a ping behind a subscribe is answered after `subscribed`, and a
    publish behind a subscribe to the same channel reaches its own connection."""
    c = await RawClient.open(edges, "orderly")
    try:
        c.send(
            {"type": "subscribe", "id": 1, "channel": "order-a"},
            {"type": "ping", "id": 2},
            {"type": "publish", "id": 3, "channel": "order-a", "data": "mine"},
            {"type": "ping", "id": 4},
            {"type": "subscribe", "id": 5, "channel": "a b"},  # refused: 40000
            {"type": "ping", "id": 6},
        )
        got = await c.until(
            lambda got: (
                {"ack", "message"} <= {f["type"] for f in got} and ("pong", 6) in replies_to(got)
            )
        )
        others = [r for r in replies_to(got) if r[0] != "ack"]
        assert others == [("subscribed", 1), ("pong", 2), ("pong", 4), ("error", 5), ("pong", 6)]
        (message,) = [f for f in got if f["type"] == "message"]
        assert message["channel"] == "order-a" and message["data"] == "mine"
        # In two writes: the ping is read while the subscribe may still be in hand.
        for n in range(20):
            c.send({"type": "subscribe", "id": 10 + n, "channel": f"order-{n}"})
            c.send({"type": "ping", "id": 100 + n})
        got = await c.until(lambda got: ("pong", 119) in replies_to(got))
        order = replies_to(got)
        for n in range(20):
            assert order.index(("subscribed", 10 + n)) < order.index(("pong", 100 + n))
    finally:
        c.close()


async def test_tokens_are_checked_at_connect(edges: EdgeCluster) -> None:
    cases = [
        (edges.ws_url("eu"), 40100),
        (edges.ws_url("eu", "garbage"), 40100),
        (edges.ws_url("eu", edges.token(ttl_s=-5)), 40101),
    ]
    for url, code in cases:
        async with WsClient.open(url, expect_connected=False) as c:
            close, frames = await closed_with(c)
            assert close == 4001
            assert frames[0]["type"] == "error" and frames[0]["error"]["code"] == code
    headers = {"Authorization": f"Bearer {edges.token('bob')}"}
    async with WsClient.open(edges.ws_url("eu"), additional_headers=headers) as c:
        assert c.connected["client_id"] == "bob"


async def test_a_websocket_at_another_path_is_refused_at_the_handshake(
    edges: EdgeCluster,
) -> None:
    edge = edges.edge("eu").edge
    for path in ("/v1/connect/", "/v1/conn", "/"):
        reader, writer = await asyncio.open_connection(edge.host, edge.port)
        try:
            request = upgrade_request(edge.host, edge.port, edges.token("dan"))
            writer.write(request.replace(b"/v1/connect?", path.encode() + b"?", 1))
            buf = bytearray()
            while (head := upgrade_response(buf)) is None:
                chunk = await asyncio.wait_for(reader.read(4096), 20)
                assert chunk, f"{path}: closed without a response"
                buf += chunk
            assert head.split(b"\r\n", 1)[0].split()[1] == b"403", (path, head)
        finally:
            writer.close()
    async with WsClient.open(edges.ws_url("eu", edges.token("dan"))) as c:
        assert c.connected["client_id"] == "dan"


async def test_token_expiry_cuts_a_live_connection(edges: EdgeCluster) -> None:
    async with WsClient.open(edges.ws_url("eu", edges.token("short", ttl_s=3))) as c:
        close, frames = await closed_with(c)
    assert close == 4001
    assert frames[-1]["type"] == "disconnect" and frames[-1]["reason"] == "token_expired"


async def test_error_codes_and_the_connection_survives(edges: EdgeCluster) -> None:
    caps = {"chat:*": ["subscribe", "publish"], "news": ["subscribe"]}
    async with WsClient.open(edges.ws_url("eu", edges.token("carol", caps))) as c:
        for frame, code in [
            ({"channel": "x"}, 40000),
            ({"type": "dance"}, 40000),
            ({"type": "subscribe", "channel": "a b"}, 40001),
            ({"type": "subscribe", "channel": "other"}, 40300),
            ({"type": "history", "channel": "chat:x"}, 40300),
            ({"type": "subscribe", "channel": "chat:x", "from": {"cursor": "bogus"}}, 40000),
        ]:
            reply = await c.request(frame)
            assert reply["type"] == "error" and reply["error"]["code"] == code, (frame, reply)
        await c.send("{not json")
        reply = await c.recv()
        assert reply["type"] == "error" and reply["error"]["code"] == 40000
        reply = await c.request({"type": "publish", "channel": "news", "data": 1})
        assert reply["type"] == "nack" and reply["error"]["code"] == 40300
        at_limit = "x" * (65536 - 2)  # its JSON text is exactly max_message_bytes
        reply = await c.request({"type": "publish", "channel": "chat:big", "data": at_limit})
        assert reply["type"] == "ack", reply
        reply = await c.request({"type": "publish", "channel": "chat:big", "data": at_limit + "x"})
        assert reply["type"] == "nack" and reply["error"]["code"] == 41300
        assert (await c.request({"type": "ping"}))["type"] == "pong"
        # A frame over max_frame_bytes (default 80 KiB) is refused and the connection closed.
        await c.send(json.dumps({"type": "publish", "channel": "chat:big", "data": "y" * 90_000}))
        close, frames = await closed_with(c)
    assert close == 4009
    assert frames[-1]["type"] == "error" and frames[-1]["error"]["code"] == 41300


async def test_duplicate_message_id_acked_twice_delivered_once(edges: EdgeCluster) -> None:
    async with (
        WsClient.open(edges.ws_url("us", edges.token("sub"))) as sub,
        WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub,
    ):
        await sub.subscribe("orders")
        frame = {"type": "publish", "channel": "orders", "data": {"n": 1}, "message_id": "o-1"}
        first = await pub.request(frame)
        again = await pub.request(frame)
        assert first["type"] == again["type"] == "ack"
        assert (first["duplicate"], again["duplicate"]) == (False, True)
        assert first["serial"] == again["serial"] and again["message_id"] == "o-1"
        end = await pub.request({"type": "publish", "channel": "orders", "data": "end"})
        assert end["type"] == "ack"
        got = await sub.messages(2)
        assert [m["id"] for m in got] == ["o-1", end["message_id"]]


async def test_channel_names_are_isolated(edges: EdgeCluster) -> None:
    names = [">", "*", "a", "b", "a.b", "a..b", "a.*", "日本", "~41", "é" * 127 + "x"]
    assert len(names[-1].encode()) == 255
    async with (
        WsClient.open(edges.ws_url("us", edges.token("iso"))) as sub,
        WsClient.open(edges.ws_url("eu", edges.token("iso-pub"))) as pub,
    ):
        for n in names:
            await sub.subscribe(n)
        reply = await sub.request({"type": "subscribe", "channel": "a b"})
        assert reply["type"] == "error" and reply["error"]["code"] == 40001
        for n in names:
            ack = await pub.request({"type": "publish", "channel": n, "data": n})
            assert ack["type"] == "ack", (n, ack)
        got = await sub.messages(len(names))
        assert sorted((m["channel"], m["data"]) for m in got) == sorted((n, n) for n in names)
        assert all(m["channel"] == m["data"] for m in got)
        # Nothing else arrives: a sentinel on a fresh channel comes next.
        await sub.subscribe("sentinel")
        await pub.request({"type": "publish", "channel": "sentinel", "data": 0})
        (last,) = await sub.messages(1)
        assert last["channel"] == "sentinel"


def padded(frame: dict[str, Any], size: int) -> str:
    """`frame` as JSON text of exactly `size` bytes (an ignored field takes the slack)."""
    text = json.dumps({**frame, "pad": ""})
    return text[:-2] + "x" * (size - len(text)) + text[-2:]


async def wait_connections(edges: EdgeCluster, region: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while edges.metrics(region).get("edgemesh_connections") != n:
        assert time.monotonic() < deadline, "connections did not settle"
        await asyncio.sleep(0.05)


async def test_limit_boundaries_on_ap(edges: EdgeCluster) -> None:
    await wait_connections(edges, "ap", 0)
    url = edges.ws_url("ap", edges.token("lim"))
    async with WsClient.open(url) as c:
        # channels per connection: 3 fine, the 4th refused, re-subscribing one is fine
        for ch in ("c1", "c2", "c3"):
            await c.subscribe(ch)
        reply = await c.request({"type": "subscribe", "channel": "c4"})
        assert reply["type"] == "error" and reply["error"]["code"] == 42900
        await c.subscribe("c1")
        # message size: 100 bytes fine, 101 refused
        reply = await c.request({"type": "publish", "channel": "c1", "data": "x" * 98})
        assert reply["type"] == "ack", reply
        reply = await c.request({"type": "publish", "channel": "c1", "data": "x" * 99})
        assert reply["type"] == "nack" and reply["error"]["code"] == 41300
        # frame size: a frame of exactly 1000 bytes is read, one of 1001 closes with 4009
        await c.send(padded({"type": "ping", "id": "big"}, 1000))
        reply = await c.recv()
        while reply["type"] == "message":  # the ack'ed publish above, delivered to us
            reply = await c.recv()
        assert reply == {"type": "pong", "id": "big"}
        await c.send(padded({"type": "ping", "id": "bigger"}, 1001))
        close, frames = await closed_with(c)
        assert close == 4009 and frames[-1]["error"]["code"] == 41300
    # connections per edge: 4 fine, the 5th refused with a disconnect and 4503
    async with (
        WsClient.open(url) as c1,
        WsClient.open(url),
        WsClient.open(url),
        WsClient.open(url),
        WsClient.open(url, expect_connected=False) as extra,
    ):
        close, frames = await closed_with(extra)
        assert close == 4503
        assert frames[0]["type"] == "disconnect" and frames[0]["reason"] == "edge_full"
        assert frames[0]["reconnect"] is True and frames[0]["fallback_regions"] == ["eu", "us"]
        assert (await c1.request({"type": "ping"}))["type"] == "pong"
    await wait_connections(edges, "ap", 0)
    # publish rate (per connection): a burst of 3, then 42900 (a token refills only every
    # 10 s), then after 4 refusals within the strike window, close 4008
    async with WsClient.open(url) as c:
        replies = [
            await c.request({"type": "publish", "channel": "c1", "data": i}) for i in range(7)
        ]
        kinds = [(r["type"], r.get("error", {}).get("code")) for r in replies]
        assert kinds == [("ack", None)] * 3 + [("nack", 42900)] * 4, kinds
        await c.send(json.dumps({"type": "publish", "channel": "c1", "data": 8, "id": "last"}))
        close, frames = await closed_with(c)
    assert close == 4008
    assert [f["type"] for f in frames] == ["nack", "disconnect"]
    assert frames[1]["reason"] == "rate_limited"


async def test_text_and_history_limit_boundaries_on_ap(edges: EdgeCluster) -> None:
    """`name`, `message_id` and `id` lengths, and the largest history `limit` (frame
    and REST), each at the ap edge's setting and one past it."""
    await wait_connections(edges, "ap", 0)
    key = {"Authorization": f"Bearer {edges.api_key}"}
    async with (
        WsClient.open(edges.ws_url("ap", edges.token("texts"))) as c,
        httpx.AsyncClient(base_url=edges.url("ap"), timeout=20) as http,
    ):
        frame = {"type": "publish", "channel": "lens", "data": 0}
        for field, top in (("name", 10), ("message_id", 8)):
            reply = await c.request({**frame, field: "é" * (top // 2)})  # top bytes
            assert reply["type"] == "ack", (field, reply)
            reply = await c.request({**frame, field: "é" * (top // 2) + "x"})
            assert reply["type"] == "nack" and reply["error"]["code"] == 40000, (field, reply)
            # the REST body has the same limits
            body = {"data": 1, field: "y" * (top + 1)}
            r = await http.post("/v1/channels/lens/messages", json=body, headers=key)
            assert r.status_code == 400 and r.json()["error"]["code"] == 40000, r.text
            r = await http.post(
                "/v1/channels/lens/messages", json={**body, field: "y" * top}, headers=key
            )
            assert r.status_code == 201, r.text
        await c.send({"type": "ping", "id": "i" * 6})
        assert await c.recv() == {"type": "pong", "id": "i" * 6}
        await c.send({"type": "ping", "id": "i" * 7})
        reply = await c.recv()
        assert reply["type"] == "error" and reply["error"]["code"] == 40000, reply
        assert reply.get("id") is None  # an id over the limit is not repeated
        # history: 6 messages stored; limit 5 (the max) gives the oldest 5, limit 6 is 40000
        for i in range(6):
            r = await http.post("/v1/channels/hist/messages", json={"data": i}, headers=key)
            assert r.status_code == 201, r.text
        page = await c.request({"type": "history", "channel": "hist", "limit": 5})
        assert page["type"] == "history_page", page
        assert [m["data"] for m in page["messages"]] == [0, 1, 2, 3, 4]
        reply = await c.request({"type": "history", "channel": "hist", "limit": 6})
        assert reply["type"] == "error" and reply["error"]["code"] == 40000, reply
        r = await http.get("/v1/channels/hist/messages", params={"limit": 5}, headers=key)
        assert r.status_code == 200 and len(r.json()["messages"]) == 5, r.text
        r = await http.get("/v1/channels/hist/messages", params={"limit": 6}, headers=key)
        assert r.status_code == 400 and r.json()["error"]["code"] == 40000, r.text
        # no limit given: the default page (100), here capped at the max (5)
        page = await c.request({"type": "history", "channel": "hist"})
        assert [m["data"] for m in page["messages"]] == [0, 1, 2, 3, 4], page
        r = await http.get("/v1/channels/hist/messages", headers=key)
        assert r.status_code == 200 and len(r.json()["messages"]) == 5, r.text
        assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_token_ttl_boundaries(edges: EdgeCluster) -> None:
    """`POST /v1/tokens`: ttl_s at max_token_ttl_s is minted, a bit more is 400 40000.
    eu has the default (7 days), ap a setting of 60 s."""
    key = {"Authorization": f"Bearer {edges.api_key}"}
    for region, top in (("eu", 7 * 24 * 3600), ("ap", 60)):
        async with httpx.AsyncClient(base_url=edges.url(region), timeout=20) as http:
            before = time.time()
            r = await http.post("/v1/tokens", json={"client_id": "t", "ttl_s": top}, headers=key)
            assert r.status_code == 200, r.text
            assert int(before) + top <= r.json()["expires_at"] <= time.time() + top
            for over in (top + 1, top + 0.5):
                r = await http.post(
                    "/v1/tokens", json={"client_id": "t", "ttl_s": over}, headers=key
                )
                assert r.status_code == 400 and r.json()["error"]["code"] == 40000, r.text


async def test_internal_error_is_50000(edges: EdgeCluster) -> None:
    # The us edge allows 1.5 MB messages, more than NATS's max_payload (1 MB): the
    # publish cannot be stored and the edge reports an internal error, not a hang.
    async with WsClient.open(edges.ws_url("us", edges.token("huge"))) as c:
        reply = await c.request(
            {"type": "publish", "channel": "huge", "data": "z" * 1_200_000}, within=30
        )
        assert reply["type"] == "nack" and reply["error"]["code"] == 50000, reply
        assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_rest_api(edges: EdgeCluster) -> None:
    base = edges.url("eu")
    key = {"Authorization": f"Bearer {edges.api_key}"}
    async with httpx.AsyncClient(base_url=base, timeout=20) as http:
        r = await http.post(
            "/v1/tokens",
            json={"client_id": "dora", "capabilities": {"rest:*": ["subscribe"]}, "ttl_s": 60},
            headers=key,
        )
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        assert r.json()["expires_at"] - time.time() <= 61
        r = await http.post(
            "/v1/tokens", json={"client_id": "x"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 403
        channel = "rest:a/b%c"
        async with WsClient.open(edges.ws_url("eu", token)) as sub:
            await sub.subscribe(channel)
            path = f"/v1/channels/{quote(channel, safe='')}/messages"
            body = {"data": {"k": 1}, "name": "ev", "message_id": "r-1"}
            r = await http.post(path, json=body, headers=key)
            assert r.status_code == 201, r.text
            first = r.json()
            assert first["serial"].startswith("eu:") and first["id"] == "r-1"
            r = await http.post(path, json=body, headers=key)
            assert r.status_code == 201 and r.json()["duplicate"] is True
            (msg,) = await sub.messages(1)
            assert msg["channel"] == channel and msg["data"] == {"k": 1} and msg["id"] == "r-1"
            r = await http.get(path, params={"limit": 10}, headers=key)
            assert r.status_code == 200, r.text
            assert [m["id"] for m in r.json()["messages"]] == ["r-1"]
            history = await sub.request({"type": "history", "channel": channel, "limit": 10})
            assert history["type"] == "error" and history["error"]["code"] == 40300
        for method, path, headers, status, code in [
            ("post", "/v1/channels/x/messages", {}, 401, 40100),
            ("post", f"/v1/channels/{quote('a b')}/messages", key, 400, 40001),
            ("post", "/v1/channels/x/messages", {"Authorization": "Bearer app:nope"}, 401, 40100),
        ]:
            r = await http.request(method, path, json={"data": 1}, headers=headers)
            assert r.status_code == status and r.json()["error"]["code"] == code, r.text
        r = await http.post("/v1/channels/x/messages", json={"data": "x" * 70000}, headers=key)
        assert r.status_code == 413 and r.json()["error"]["code"] == 41300
        assert (await http.get("/healthz")).status_code == 200
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["jetstream"]["ok"] is True


FUZZ_FRAMES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=50),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["publish", "subscribe", "unsubscribe", "history", "ping"])},
        optional={
            "channel": st.text(min_size=1, max_size=12),
            "data": st.none() | st.integers() | st.text(max_size=20),
            "from": st.dictionaries(
                st.sampled_from(["cursor", "rewind"]), st.integers() | st.text(max_size=30)
            ),
            "limit": st.integers(),
            "after": st.text(max_size=30),
            "id": st.integers() | st.text(max_size=10) | st.booleans() | st.none(),
        },
    ).map(json.dumps),
)


async def test_fuzz_harms_neither_the_handler_nor_a_live_subscriber(edges: EdgeCluster) -> None:
    """Fuzzed frames on fresh eu connections (hypothesis, in a thread) while another eu
    connection is subscribed and receiving a paced stream: no frame gets 50000, each
    fuzzed connection still answers a ping, the live subscriber gets every message in
    order, during the fuzz and after it, and the edge's metrics count what this test
    itself produced (deltas, not totals left by other tests)."""
    seen_errors: collections.Counter[int] = collections.Counter()
    examples = 0

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(frame=FUZZ_FRAMES)
    def fuzz(frame: str | bytes) -> None:
        nonlocal examples
        examples += 1
        with sync_connect(edges.ws_url("eu", edges.token("fuzz")), max_size=None) as ws:
            assert json.loads(ws.recv(20))["type"] == "connected"
            ws.send(frame)
            ws.send(json.dumps({"type": "ping", "id": "after-fuzz"}))
            while True:
                doc = json.loads(ws.recv(20))
                if doc["type"] == "error":
                    seen_errors[doc["error"]["code"]] += 1
                assert doc.get("error", {}).get("code") != 50000, (frame, doc)
                if doc.get("id") == "after-fuzz" and doc["type"] == "pong":
                    break

    channel = "live-during-fuzz"
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("live"))) as live,
        WsClient.open(edges.ws_url("eu", edges.token("live-pub"))) as pub,
    ):
        await live.subscribe(channel)
        before = edges.metrics("eu")
        fuzz_done = asyncio.Event()
        during = 0

        async def receive() -> list[Any]:
            nonlocal during
            got: list[Any] = []
            while not got or got[-1] != "end":
                (m,) = await live.messages(1)
                got.append(m["data"])
                during += not fuzz_done.is_set()
            return got

        async def publish() -> int:
            sent = 0
            while not fuzz_done.is_set():
                ack = await pub.request({"type": "publish", "channel": channel, "data": sent})
                assert ack["type"] == "ack", ack
                sent += 1
                await asyncio.sleep(0.02)  # pacing: ~50/s while the fuzz runs
            return sent

        receiver = asyncio.create_task(receive())
        publisher = asyncio.create_task(publish())
        try:
            await asyncio.to_thread(fuzz)
        finally:
            fuzz_done.set()
        sent = await asyncio.wait_for(publisher, 60)
        ack = await pub.request({"type": "publish", "channel": channel, "data": "end"})
        assert ack["type"] == "ack", ack
        got = await asyncio.wait_for(receiver, 60)
        assert got == [*range(sent), "end"]
        assert during > 0, "the live subscriber received nothing while the fuzz ran"
        assert (await live.request({"type": "ping"}))["type"] == "pong"
    after = edges.metrics("eu")

    def delta(key: str) -> float:
        return after.get(key, 0) - before.get(key, 0)

    assert examples >= 100 and sent >= 1
    assert delta("edgemesh_connections_opened_total") == examples
    for code in set(seen_errors) | {40000, 50000}:
        assert delta(f'edgemesh_errors_total{{code="{code}"}}') == seen_errors[code], code
    assert seen_errors[40000] >= 1  # hypothesis surely sent some text that is not JSON
    assert delta('edgemesh_acks_total{duplicate="false"}') >= sent + 1
    assert delta("edgemesh_publish_ack_seconds_count") >= sent + 1
    assert delta("edgemesh_messages_out_total") >= sent + 1
    assert delta("edgemesh_delivery_lag_seconds_count") >= sent + 1
