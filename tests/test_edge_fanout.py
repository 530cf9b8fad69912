"""The fan-out's hot loop (edge.fanout) on real loopback connections, under asyncio's
own event loop and under uvloop (what the edge runs on): every open connection gets
the frame, a closing one gets nothing more, the send buffer limit at its boundary, and
one failing connection does not starve the others."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import uvloop

from edge.fanout import TransportFanout

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(body(), 30))


@dataclass(eq=False)
class ServerSide(asyncio.Protocol):
    """The server's end of one connection, as the edge's protocol: it has over_limit()."""

    over_limit_calls: int = 0
    fail: bool = False
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def over_limit(self) -> None:
        self.over_limit_calls += 1
        if self.fail:
            raise RuntimeError("this connection's hook fails")


@dataclass(eq=False)
class Reader(asyncio.Protocol):
    """The client's end: keeps what it reads; can stop reading."""

    data: bytearray = field(default_factory=bytearray)
    got: asyncio.Event = field(default_factory=asyncio.Event)
    transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.got.set()

    async def until(self, n: int) -> bytes:
        while len(self.data) < n:
            self.got.clear()
            await self.got.wait()
        return bytes(self.data)


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


def transports(pairs: list[tuple[ServerSide, Reader]]) -> tuple[asyncio.Transport, ...]:
    out = []
    for side, _ in pairs:
        assert side.transport is not None
        out.append(side.transport)
    return tuple(out)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_every_open_connection_gets_the_frame_and_a_closing_one_nothing(loop_name: str) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            fanout = TransportFanout(64 * 1024 * 1024)
            ts = transports(pairs)
            fanout.write(b"one", ts)
            for _, reader in pairs:
                assert await reader.until(3) == b"one"
            # Closing with data still buffered (as after a close frame to a slow reader):
            # the transport would still send what is written now.
            closing, closing_reader = pairs[1]
            buffered = await fill_kernel_buffers(closing, closing_reader)
            ts[1].close()
            fanout.write(b"two", ts)
            for i in (0, 2):
                assert await pairs[i][1].until(6) == b"onetwo"
            eof = asyncio.get_running_loop().create_future()
            closing_reader.connection_lost = lambda exc: eof.set_result(None)  # type: ignore[method-assign]
            assert closing_reader.transport is not None
            closing_reader.transport.resume_reading()
            await eof
            assert len(closing_reader.data) == 3 + FILL and closing_reader.data.endswith(b"x")
            assert buffered > 0
            assert all(side.over_limit_calls == 0 for side, _ in pairs)

    run(loop_name, body)


FILL = 32 * 1024 * 1024


async def fill_kernel_buffers(side: ServerSide, reader: Reader) -> int:
    """Stop the reader and write until the kernel takes no more: from then on, each
    write adds exactly its size to the transport's buffer (until the loop runs)."""
    assert reader.transport is not None and side.transport is not None
    reader.transport.pause_reading()
    await asyncio.sleep(0.05)
    side.transport.write(b"x" * FILL)
    buffered = side.transport.get_write_buffer_size()
    assert buffered > 0, "the kernel took 32 MiB: cannot reach the limit this way"
    return buffered


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_send_buffer_limit_at_its_boundary(loop_name: str) -> None:
    async def body() -> None:
        async with connections(2) as pairs:
            (stalled, stalled_reader), (other, other_reader) = pairs
            buffered = await fill_kernel_buffers(stalled, stalled_reader)
            fanout = TransportFanout(buffered + 10)
            ts = transports(pairs)
            fanout.write(b"0123456789", ts)  # exactly at the limit: kept
            assert stalled.over_limit_calls == 0
            fanout.write(b"!", ts)  # one byte over: cut
            assert stalled.over_limit_calls == 1
            assert other.over_limit_calls == 0
            assert await other_reader.until(11) == b"0123456789!"

    run(loop_name, body)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_failing_connection_does_not_starve_the_others(loop_name: str) -> None:
    async def body() -> None:
        async with connections(3) as pairs:
            first, first_reader = pairs[0]
            first.fail = True
            buffered = await fill_kernel_buffers(first, first_reader)
            fanout = TransportFanout(buffered)
            fanout.write(b"frame", transports(pairs))  # the first's hook raises
            assert first.over_limit_calls == 1
            for _, reader in pairs[1:]:
                assert await reader.until(5) == b"frame"

    run(loop_name, body)
