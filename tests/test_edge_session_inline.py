"""`ClientSession.handle_now`, the frames-in shortcut, on a real TCP transport (no edge
process): what it handles at once, what it leaves to the ASGI queue, and a parser
failure answered with 50000 while the connection stays."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge.session import ClientSession
from tests.rawws import take_frames
from tests.test_edge_send_buffer import LIMIT, TcpSocket, loopback, session_on


class Peer:
    """The client's end of the connection: reads the server's frames."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        sock.setblocking(False)

    async def frames(self, n: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        got: list[dict[str, Any]] = []
        while len(got) < n:
            got += [json.loads(p) for _, p in take_frames(self.buf)]
            if len(got) < n:
                self.buf += await asyncio.wait_for(loop.sock_recv(self.sock, 65536), 5)
        return got


@pytest.fixture
async def pair() -> AsyncIterator[tuple[ClientSession, TcpSocket, Peer]]:
    async with loopback() as (sock, peer):
        yield session_on(sock, LIMIT), sock, Peer(peer)


async def test_frames_that_need_no_waiting_are_handled_at_once(
    pair: tuple[ClientSession, TcpSocket, Peer],
) -> None:
    session, sock, peer = pair
    assert session.handle_now('{"type":"ping","id":1}')
    assert session.handle_now('{"type":"nonsense","id":2}')  # refused: answered at once
    # A subscribe waits on the hub: left to the queue, nothing answered here.
    assert not session.handle_now('{"type":"subscribe","id":3,"channel":"c"}')
    assert not session.handle_now('{"type":"unsubscribe","id":4,"channel":"c"}')
    assert not session.handle_now('{"type":"history","id":5,"channel":"c"}')
    pong, error = await peer.frames(2)
    assert pong == {"type": "pong", "id": 1}
    assert error["type"] == "error" and error["id"] == 2 and error["error"]["code"] == 40000
    assert peer.buf == b"" and not session.closing and sock.closes == []


async def test_a_parser_failure_is_answered_50000_and_the_connection_stays(
    pair: tuple[ClientSession, TcpSocket, Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    session, sock, peer = pair

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a parser bug")

    with monkeypatch.context() as patch:
        patch.setattr("edge.session.parse_frame", broken)
        assert session.handle_now('{"type":"ping","id":1}')
        await session.handle('{"type":"ping","id":2}')  # the queued path: the same
    assert session.handle_now('{"type":"ping","id":3}')
    first, second, pong = await peer.frames(3)
    for err in (first, second):
        assert err["type"] == "error" and "id" not in err
        assert err["error"]["code"] == 50000
    assert pong == {"type": "pong", "id": 3}
    assert not session.closing and sock.closes == []
    assert session.node.metrics.errors.get("50000") == 2
