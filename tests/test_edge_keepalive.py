"""Keepalive pings on real edges: a client that answers stays, a silent one is cut, and
pings of connections opened at different moments go out together (on the ping grid).

One supercluster and one edge per region for the module, with a 1 s heartbeat.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
from typing import Any, cast

from edge.wsprotocol import PING_GRID_S, KeepaliveWheel, ping_slot
from tests.edge_fixture import EdgeCluster, edges_fixture
from tests.rawws import (
    CLOSE,
    PING,
    PONG,
    masked_frame,
    take_frames,
    upgrade_request,
    upgrade_response,
)

HEARTBEAT_S = 1.0

edges = edges_fixture(env={"EDGEMESH_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S)})


class PingClient(asyncio.Protocol):
    """A raw WebSocket client: records when each ping arrives, answers it or not, and
    records the close code the edge sends."""

    def __init__(self, host: str, port: int, token: str, answer: bool) -> None:
        self.request = upgrade_request(host, port, token)
        self.answer = answer
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray()
        self.upgraded = False
        self.pings: list[float] = []
        self.ping_seen = asyncio.Event()
        self.close_code: int | None = None
        self.closed = self.loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            head = upgrade_response(self.buf)
            if head is None:
                return
            assert b" 101 " in head, head
            self.upgraded = True
        for opcode, payload in take_frames(self.buf):
            if opcode == PING:
                self.pings.append(self.loop.time())
                self.ping_seen.set()
                if self.answer:
                    assert self.transport is not None
                    self.transport.write(masked_frame(payload, 0x80 | PONG))
            elif opcode == CLOSE:
                self.close_code = int.from_bytes(payload[:2], "big")


async def open_client(edges: EdgeCluster, name: str, answer: bool = True) -> PingClient:
    edge = edges.edge("eu").edge
    token = edges.token(name)
    _, client = await asyncio.get_running_loop().create_connection(
        lambda: PingClient(edge.host, edge.port, token, answer), edge.host, edge.port
    )
    return client


async def pings(client: PingClient, count: int, within_s: float) -> None:
    async def wait() -> None:
        while len(client.pings) < count:
            client.ping_seen.clear()
            await client.ping_seen.wait()

    await asyncio.wait_for(wait(), within_s)


def test_ping_slot_rounds_up_to_the_grid() -> None:
    assert ping_slot(10.0, 1.0) == 10.0  # on the grid: that very slot
    assert ping_slot(10.05, 1.0) == 10.0  # a timer's lateness keeps its slot
    assert ping_slot(9.9, 1.0) == 10.0  # at most a tenth of a step early
    assert ping_slot(10.101, 1.0) == 11.0
    assert ping_slot(10.999, 1.0) == 11.0
    assert ping_slot(12.5, 5.0) == 15.0
    assert PING_GRID_S == 1.0


def test_the_wheel_ticks_each_member_of_a_slot_once_with_one_timer() -> None:
    """Members due in one grid step share its slot; a member taken out is not ticked;
    one whose tick raises does not stop the others (two raise, so that whatever the
    order, one of them comes before another member)."""

    async def body() -> None:
        loop = asyncio.get_running_loop()
        wheel = KeepaliveWheel(loop)
        ticked: list[str] = []
        all_ticked = asyncio.Event()

        class Member:
            def __init__(self, name: str, fail: bool = False) -> None:
                self.name = name
                self.fail = fail

            def keepalive_tick(self) -> None:
                ticked.append(self.name)
                if len(ticked) == 3:
                    all_ticked.set()
                if self.fail:
                    raise RuntimeError("boom")

        members = [Member("a", fail=True), Member("b", fail=True), Member("c"), Member("gone")]
        slot = ping_slot(loop.time() + 0.2)
        dues = (slot - 0.09, slot - 0.05, slot, slot)  # all in that slot (its 0.1 s slack)
        slots = {wheel.add(cast(Any, m), due) for m, due in zip(members, dues, strict=True)}
        assert len(slots) == 1 and len(wheel.slots) == 1
        wheel.discard(cast(Any, members[3]), slots.pop())
        await asyncio.wait_for(all_ticked.wait(), 3 * PING_GRID_S)
        assert sorted(ticked) == ["a", "b", "c"] and not wheel.slots

    asyncio.run(body())


async def test_pings_of_staggered_connections_go_out_together(edges: EdgeCluster) -> None:
    clients = []
    for i in range(5):
        clients.append(await open_client(edges, f"grid{i}"))
        # Spread the connections over a heartbeat, on purpose: without the grid, their
        # pings would go out at five different moments of each second.
        await asyncio.sleep(HEARTBEAT_S / 5)
    try:
        for c in clients:
            await pings(c, 4, within_s=10 * HEARTBEAT_S)
        # Each connection: one ping per heartbeat; its slot stays put (were it to move a
        # step later each time, every gap would be two). A timer that fires over 0.1 s
        # late may push one ping to the next step.
        for c in clients:
            gaps = [b - a for a, b in itertools.pairwise(c.pings)]
            assert statistics.median(gaps) <= HEARTBEAT_S + 0.3, gaps
            assert min(gaps) >= HEARTBEAT_S - PING_GRID_S / 10 - 0.05, gaps
            assert max(gaps) <= HEARTBEAT_S + PING_GRID_S + 0.5, gaps
        # All of them, from when the last one is pinged too: pings arrive in bursts, one
        # per grid step, not one per connection.
        since = clients[-1].pings[0]
        times = sorted(t for c in clients for t in c.pings if t >= since - 0.1)
        bursts = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 0.15)
        assert bursts <= (times[-1] - times[0]) / PING_GRID_S + 2, (bursts, times)
        assert len(times) >= 4 * bursts, (bursts, times)  # each burst: (nearly) all five
    finally:
        for c in clients:
            if c.transport is not None:
                c.transport.close()


async def test_a_client_that_does_not_answer_is_cut_one_that_answers_stays(
    edges: EdgeCluster,
) -> None:
    silent = await open_client(edges, "silent", answer=False)
    talker = await open_client(edges, "talker", answer=True)
    try:
        # Its ping, then another heartbeat without a pong, then the close (1011).
        code = await asyncio.wait_for(silent.closed, 4 * HEARTBEAT_S + 2 * PING_GRID_S)
        assert code == 1011 and len(silent.pings) >= 1  # uvicorn's "keepalive ping timeout"
        # The one that answers goes on being pinged, and is still open.
        seen = len(talker.pings)
        await pings(talker, seen + 2, within_s=4 * HEARTBEAT_S + 2 * PING_GRID_S)
        assert not talker.closed.done() and talker.close_code is None
    finally:
        for c in (silent, talker):
            if c.transport is not None:
                c.transport.close()
