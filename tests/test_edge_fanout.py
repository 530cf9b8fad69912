"""The fan-out's hot loop (edge.fanout) and its direct write path (edge.direct) on real
loopback connections, under asyncio's own event loop and under uvloop (what the edge
runs on).

Each connection's server side is set up as the edge's protocol sets it up: its
transport behind a GuardedTransport, a DirectPath, and an owner that prepares again
when told (as the hub does). The tests check that every connection gets every frame
with its bytes in order whichever path they take, that a connection the kernel stops
taking moves to its transport and comes back once drained, that nothing goes out
after a close, that the send buffer limit holds at its boundary on both paths, that a
failing connection does not starve the others, and that the direct path's fd is
closed only after its owner was told.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvloop

from edge import direct
from edge.direct import DirectPath, GuardedTransport, fd_budget
from edge.fanout import Prepared, TransportFanout

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
FILL = 32 * 1024 * 1024


def run(loop_name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(body(), 30))


@dataclass(eq=False)
class ServerSide(asyncio.Protocol):
    """The server's end of one connection, set up as edge.wsprotocol sets up its own."""

    over_limit_calls: int = 0
    fail: bool = False
    changes: int = 0
    open: bool = True  # False: as after a close frame
    transport: asyncio.Transport = field(init=False)
    direct: DirectPath = field(init=False)
    on_change_hook: Callable[[], None] | None = None
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        inner = cast(asyncio.Transport, transport)
        self.direct = DirectPath(inner, lambda: self.open and not inner.is_closing())
        self.direct.on_change = self.changed
        self.transport = GuardedTransport(inner, self.direct, lambda: self.open)

    def connection_lost(self, exc: Exception | None) -> None:
        self.direct.close()
        self.lost.set()

    def changed(self) -> None:
        self.changes += 1
        if self.on_change_hook is not None:
            self.on_change_hook()

    def over_limit(self) -> None:
        self.over_limit_calls += 1
        if self.fail:
            raise RuntimeError("this connection's hook fails")


@dataclass(eq=False)
class Sink:
    socket: ServerSide


@dataclass(eq=False)
class Reader(asyncio.Protocol):
    """The client's end: keeps what it reads; can stop reading."""

    data: bytearray = field(default_factory=bytearray)
    got: asyncio.Event = field(default_factory=asyncio.Event)
    eof: asyncio.Event = field(default_factory=asyncio.Event)
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof.set()

    async def until(self, n: int) -> bytes:
        while len(self.data) < n:
            self.got.clear()
            await self.got.wait()
        return bytes(self.data)


class Owner:
    """Prepares again after a change, as the hub does before its next frame."""

    def __init__(self, fanout: TransportFanout, pairs: list[tuple[ServerSide, Reader]]) -> None:
        self.fanout = fanout
        self.sinks = tuple(Sink(side) for side, _ in pairs)
        self.stale = True
        self.prepared: Prepared | None = None
        for side, _ in pairs:
            side.on_change_hook = self.mark

    def mark(self) -> None:
        self.stale = True

    def write(self, frame: bytes) -> Prepared:
        if self.stale or self.prepared is None:
            self.stale = False
            self.prepared = self.fanout.prepare(self.sinks)  # type: ignore[arg-type]
        prepared = self.prepared
        self.fanout.write(frame, prepared)
        return prepared


@contextlib.asynccontextmanager
async def connections(n: int) -> AsyncIterator[list[tuple[ServerSide, Reader]]]:
    loop = asyncio.get_running_loop()
    accepted: asyncio.Queue[ServerSide] = asyncio.Queue()

    def factory() -> ServerSide:
        side = ServerSide()
        accepted.put_nowait(side)
        return side

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pairs: list[tuple[ServerSide, Reader]] = []
    try:
        for _ in range(n):
            _, reader = await loop.create_connection(Reader, "127.0.0.1", port)
            pairs.append((await accepted.get(), reader))
        yield pairs
    finally:
        for side, reader in pairs:
            for t in (side.transport, reader.transport):
                if t is not None and not t.is_closing():
                    t.abort()
        server.close()
        for side, _ in pairs:  # connection_lost closes the direct paths' fds
            await asyncio.wait_for(side.lost.wait(), 5)


async def stall(reader: Reader) -> None:
    assert reader.transport is not None
    reader.transport.pause_reading()
    await asyncio.sleep(0.05)  # the pause reaches the event loop before the writes


def resume(reader: Reader) -> None:
    assert reader.transport is not None
    reader.transport.resume_reading()


def numbered(k: int, size: int = 1000) -> bytes:
    """A frame whose bytes say where they belong: a torn or reordered stream shows."""
    head = f"<{k}:".encode()
    return head + b"." * (size - len(head) - 1) + b">"


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_direct_and_transport_writes_keep_one_order(loop_name: str) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            owner = Owner(TransportFanout(64 * 1024 * 1024), pairs)
            prepared = owner.write(b"one,")
            assert len(prepared.fds) == 3 and not prepared.others
            for side, _ in pairs:  # what the protocol writes itself (pongs, acks)
                side.transport.write(b"ctl,")
            owner.write(b"two")
            for _, reader in pairs:
                assert await reader.until(11) == b"one,ctl,two"
            assert all(side.changes == 0 for side, _ in pairs)

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_connection_the_kernel_stops_taking_moves_to_its_transport_and_back(
    loop_name: str,
) -> None:
    async def body() -> None:
        async with connections(2) as pairs:
            (slow, slow_reader), (fast, fast_reader) = pairs
            spills: list[None] = []
            owner = Owner(TransportFanout(FILL * 4, on_spill=lambda: spills.append(None)), pairs)
            await stall(slow_reader)
            frames = [numbered(k, 64 * 1024) for k in range(400)]  # 25 MiB
            moved_at = None
            for k, frame in enumerate(frames):
                prepared = owner.write(frame)
                if moved_at is None and slow.changes:
                    moved_at = k
                    assert slow.transport.get_write_buffer_size() > 0
                await asyncio.sleep(0)  # the other reader reads
            assert moved_at is not None, "the kernel took 25 MiB: nothing was spilled"
            assert len(spills) >= 1
            prepared = owner.write(b"")  # the rebuilt lists: the stalled one off the fds
            assert slow in prepared.others and slow not in prepared.by_fd.values()
            total = sum(len(f) for f in frames)
            resume(slow_reader)
            for reader in (slow_reader, fast_reader):
                assert await reader.until(total) == b"".join(frames)
            # Drained: the next frame goes through the transport, finds its buffer empty
            # and asks for the direct path back.
            changes = slow.changes
            owner.write(b"again")
            assert slow.changes == changes + 1
            prepared = owner.write(b"direct")
            assert set(prepared.by_fd.values()) == {slow, fast} and not prepared.others
            for reader in (slow_reader, fast_reader):
                assert await reader.until(total + 11) == b"".join(frames) + b"againdirect"

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_nothing_goes_out_after_a_close_or_a_close_frame(loop_name: str) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            owner = Owner(TransportFanout(64 * 1024 * 1024), pairs)
            owner.write(b"one")
            (closed, closed_reader), (framed, framed_reader), (_, open_reader) = pairs
            closed.transport.close()
            assert closed.changes == 1  # off the direct path before the close
            framed.open = False  # a close frame goes out through the protocol
            framed.transport.write(b"CLOSE")
            assert framed.changes == 1
            prepared = owner.write(b"two")
            assert set(prepared.others) == {closed, framed}
            assert await open_reader.until(6) == b"onetwo"
            await closed_reader.eof.wait()
            assert bytes(closed_reader.data) == b"one"
            assert await framed_reader.until(8) == b"oneCLOSE"
            owner.write(b"three")
            assert await open_reader.until(11) == b"onetwothree"
            assert bytes(framed_reader.data) == b"oneCLOSE"

    run(loop_name, body)


async def fill_kernel_buffers(side: ServerSide, reader: Reader) -> int:
    """Stop the reader and write until the kernel takes no more: from then on, each
    write adds exactly its size to the transport's buffer (until the loop runs)."""
    await stall(reader)
    side.transport.write(b"x" * FILL)
    buffered = side.transport.get_write_buffer_size()
    assert buffered > 0, "the kernel took 32 MiB: cannot reach the limit this way"
    return buffered


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_send_buffer_limit_at_its_boundary_through_the_transport(loop_name: str) -> None:
    async def body() -> None:
        async with connections(2) as pairs:
            (stalled, stalled_reader), (other, other_reader) = pairs
            buffered = await fill_kernel_buffers(stalled, stalled_reader)
            owner = Owner(TransportFanout(buffered + 10), pairs)
            prepared = owner.write(b"0123456789")  # exactly at the limit: kept
            assert prepared.others == (stalled,)
            assert stalled.over_limit_calls == 0
            owner.write(b"!")  # one byte over: cut
            assert stalled.over_limit_calls == 1
            assert other.over_limit_calls == 0
            assert await other_reader.until(11) == b"0123456789!"

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_send_buffer_limit_at_its_boundary_on_the_direct_path(loop_name: str) -> None:
    async def body() -> None:
        big = b"y" * FILL
        # Exactly at the limit: kept; one byte over: cut.
        for limit, cuts in ((FILL, 0), (FILL - 1, 1)):
            async with connections(1) as pairs:
                side, reader = pairs[0]
                await stall(reader)
                n = os.write(side.direct.open(), big)  # what the kernel takes now
                assert 0 < n < FILL
                # The next frame is refused whole (EAGAIN): all of it goes to the transport.
                Owner(TransportFanout(limit), pairs).write(big)
                assert side.changes == 1 and side.transport.get_write_buffer_size() == FILL
                assert side.over_limit_calls == cuts, limit

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_failing_connection_does_not_starve_the_others(loop_name: str) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            first, first_reader = pairs[0]
            first.fail = True
            buffered = await fill_kernel_buffers(first, first_reader)
            owner = Owner(TransportFanout(buffered), pairs)
            owner.write(b"frame")  # the first's hook raises
            assert first.over_limit_calls == 1
            for _, reader in pairs[1:]:
                assert await reader.until(5) == b"frame"

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_the_direct_fd_closes_only_after_its_owner_was_told(loop_name: str) -> None:
    async def body() -> None:
        async with connections(1) as pairs:
            side, reader = pairs[0]
            owner = Owner(TransportFanout(1 << 20), pairs)
            (fd,) = owner.write(b"hi").fds
            fd_open_when_told: list[bool] = []
            told = asyncio.Event()

            def on_change() -> None:
                owner.mark()
                fd_open_when_told.append(is_open(fd))
                told.set()

            side.on_change_hook = on_change
            assert reader.transport is not None
            reader.transport.close()  # the peer goes: the loop ends the connection
            await told.wait()  # DirectPath.close tells, then closes the fd at once
            assert fd_open_when_told == [True]
            assert side.direct.closed and side.direct.fd == -1
            assert not is_open(fd)
            assert side.direct.open() == -1

    run(loop_name, body)


def test_a_reused_fd_number_is_never_written_to() -> None:
    """The direct path writes to its own copy of the socket's fd, so it does not depend
    on the event loop telling the protocol (connection_lost) before it closes its fd:
    here the transport's fd number is taken by another connection while the fan-out's
    lists still hold this one (as if a loop closed first and told later). The frame
    must reach this connection's peer through the copy, and nothing the newcomer."""

    async def body() -> None:
        async with connections(1) as pairs:
            side, reader = pairs[0]
            owner = Owner(TransportFanout(1 << 20), pairs)
            prepared = owner.write(b"one")
            number = side.transport.get_extra_info("socket").fileno()
            assert number not in prepared.fds
            newcomer, peer = socket.socketpair()
            with newcomer, peer:
                os.dup2(newcomer.fileno(), number)  # the number now names the newcomer
                owner.fanout.write(b"two", prepared)
                peer.setblocking(False)
                with pytest.raises(BlockingIOError):
                    peer.recv(100)  # nothing reached the newcomer
                assert await reader.until(6) == b"onetwo"  # the copy reached the peer
                side.transport.abort()  # closes `number` (the newcomer's extra fd)
                await side.lost.wait()
            assert side.direct.fd == -1

    run("uvloop", body)


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_no_direct_path_past_the_copy_budget(
    loop_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            live = direct._live_copies
            monkeypatch.setattr(direct, "copy_budget", live + 2)  # room for two copies
            owner = Owner(TransportFanout(1 << 20), pairs)
            prepared = owner.write(b"frame")
            assert len(prepared.fds) == 2 and len(prepared.others) == 1
            assert direct._live_copies == live + 2
            (left_out,) = prepared.others
            assert left_out.direct.unusable and left_out.direct.fd == -1
            for _, reader in pairs:
                assert await reader.until(5) == b"frame"
            # Unusable for good: an empty buffer does not ask for a rebuild each frame.
            owner.write(b"again")
            assert left_out.changes == 0
            for side, _ in pairs:
                side.transport.abort()
            for side, _ in pairs:
                await side.lost.wait()
            assert direct._live_copies == live  # each connection_lost gave its copy back

    run(loop_name, body)


def test_fd_budget() -> None:
    inf = resource.RLIM_INFINITY
    reserve = direct.FD_RESERVE
    # Enough already: kept; copies get what sockets and the reserve leave.
    assert fd_budget(100_000, 100_000, 10_000) == (100_000, 100_000 - 10_000 - reserve)
    # Too low: raised to exactly two fds per connection plus the reserve: a copy each.
    want = 2 * 10_000 + reserve
    assert fd_budget(1024, inf, 10_000) == (want, 10_000)
    assert fd_budget(1024, want, 10_000) == (want, 10_000)
    # The hard limit caps it: fewer copies, never fewer sockets.
    assert fd_budget(1024, want - 1, 10_000) == (want - 1, 10_000 - 1)
    assert fd_budget(20_000, 15_000, 10_000) == (20_000, 20_000 - 10_000 - reserve)
    assert fd_budget(1024, 1024, 10_000) == (1024, 0)  # no copies at all


def test_claim_open_files_raises_the_soft_limit_and_sets_the_copy_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * 1000 + direct.FD_RESERVE
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"the hard open-files limit {hard} is below {want}")
    monkeypatch.setattr(direct, "copy_budget", direct.copy_budget)  # restored after
    resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
    try:
        direct.claim_open_files(1000)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (want, hard)
        assert direct.copy_budget == 1000
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
