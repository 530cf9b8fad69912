"""The send buffer limit at its boundary, on a real TCP transport (no edge process).

`ClientSession.send_frame` is driven directly over a real loopback connection whose
peer never reads. Once the kernel's buffers are full, asyncio keeps every further
write in the transport's own buffer, byte for byte, and nothing drains it while the
test does not yield to the event loop: so the buffer can be put exactly at
`max_send_buffer_bytes` (the connection stays) and then one byte past it (cut with
`slow_consumer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from edge.capabilities import Capabilities
from edge.direct import DirectPath
from edge.errors import CloseCode
from edge.limits import Limits
from edge.node import EdgeNode
from edge.session import ClientSession
from edge.settings import EdgeSettings
from edge.tokens import KeyRing, Principal
from mesh.secrets import generate_secrets
from mesh.topology import dev_topology

LIMIT = 64 * 1024


@dataclass
class TcpSocket:
    """The session's view of a connection (:class:`edge.wsprotocol.RawSocket`) over a
    bare transport: it records the close the session asks for."""

    transport: asyncio.Transport
    closes: list[tuple[int, str, bytes]] = field(default_factory=list)
    direct: DirectPath = field(init=False)

    def __post_init__(self) -> None:
        self.direct = DirectPath(self.transport, self.can_write)

    def can_write(self) -> bool:
        return not self.transport.is_closing()

    def write(self, frame: bytes) -> None:
        self.transport.write(frame)

    def close_now(self, code: int, reason: str, grace_s: float, before: bytes = b"") -> None:
        self.closes.append((code, reason, before))
        self.transport.abort()


@contextlib.asynccontextmanager
async def loopback() -> AsyncIterator[tuple[TcpSocket, socket.socket]]:
    """A connection over loopback: the session's side on an asyncio transport, and the
    peer's bare socket (which reads only if the test makes it)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    with peer:
        transport, _ = await asyncio.get_running_loop().create_connection(
            asyncio.Protocol, sock=client
        )
        try:
            yield TcpSocket(transport), peer
        finally:
            transport.abort()


@pytest.fixture
async def stalled() -> AsyncIterator[TcpSocket]:
    """A client transport to a loopback peer that never reads."""
    async with loopback() as (sock, _):
        yield sock


def session_on(sock: TcpSocket, max_send_buffer_bytes: int) -> ClientSession:
    secrets = generate_secrets()
    node = EdgeNode(
        dev_topology(),  # ports never bound: the node is not started
        secrets,
        "eu",
        "eu-e1",
        KeyRing.from_pairs(secrets.api_keys),
        EdgeSettings(limits=Limits(max_send_buffer_bytes=max_send_buffer_bytes)),
    )
    principal = Principal("reader", "dev", Capabilities.everything(), None)
    return ClientSession(node, sock, principal)


def fill_kernel_buffers(session: ClientSession, transport: asyncio.Transport) -> int:
    """Write 1 KiB frames until the kernel refuses some: the transport buffers the rest."""
    chunk = b"f" * 1024
    for _ in range(100_000):  # ~100 MB: far beyond any loopback socket buffer
        session.send_frame(chunk)
        held = transport.get_write_buffer_size()
        if held:
            return held
    raise AssertionError("the kernel took 100 MB without the peer reading")


async def test_buffer_at_the_limit_stays_one_byte_past_is_cut(stalled: TcpSocket) -> None:
    session = session_on(stalled, LIMIT)
    metrics = session.node.metrics
    held = fill_kernel_buffers(session, stalled.transport)
    assert 0 < held <= 1024 < LIMIT and not session.closing
    # No await from here on: nothing can drain the transport's buffer.
    session.send_frame(b"a" * (LIMIT - held))
    assert stalled.transport.get_write_buffer_size() == LIMIT
    assert not session.closing and stalled.closes == []
    assert metrics.slow_consumers.get() == 0
    session.send_frame(b"b")
    assert session.closing and session.close_reason == "slow_consumer"
    assert metrics.slow_consumers.get() == 1
    ((code, reason, before),) = stalled.closes
    assert (code, reason) == (CloseCode.TRY_AGAIN_LATER, "slow_consumer")
    # `before` is the disconnect frame (unmasked server text frame, 7-bit length).
    assert before[0] == 0x81 and before[1] == len(before) - 2
    doc = json.loads(before[2:])
    assert doc["type"] == "disconnect" and doc["reason"] == "slow_consumer"
    assert doc["reconnect"] is True and doc["fallback_regions"] == ["us", "ap"]
    # A cut connection gets nothing more and is not counted twice.
    session.send_frame(b"c")
    assert metrics.slow_consumers.get() == 1 and len(stalled.closes) == 1


async def test_default_limit_is_one_mebibyte(stalled: TcpSocket) -> None:
    default = Limits().max_send_buffer_bytes
    assert default == 1024 * 1024
    assert Limits.from_env({"EDGEMESH_MAX_SEND_BUFFER_BYTES": "4096"}).max_send_buffer_bytes == 4096
    session = session_on(stalled, default)
    held = fill_kernel_buffers(session, stalled.transport)
    session.send_frame(b"a" * (default - held))
    assert not session.closing
    session.send_frame(b"b")
    assert session.closing and session.close_reason == "slow_consumer"
