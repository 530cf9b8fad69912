"""uvicorn's sans-I/O WebSocket protocol with a fast path for pre-framed writes.

The edge encodes each delivered frame once (see :mod:`edge.replies`) and writes the
same bytes to every subscriber's transport. This subclass of uvicorn's
websockets-sansio protocol hands itself to the app through the ASGI scope's
``extensions`` (key :data:`SOCKET_EXTENSION`) as a :class:`RawSocket`. It guards the
traps of writing beside the library: nothing is written before the 101 response is
out, nor after a close frame; closing never waits on a peer that stopped reading.
A client frame over the size limit gets an `error` 41300 and close 4009 instead of
the library's 1009. A text frame goes to the app's ``on_text`` first, when it has
one and nothing is queued: a frame it handles there skips the ASGI queue, the app
task's wake-up and the pause and resume of reading that each queued frame costs.

Keepalive: the edge pings each connection once per heartbeat interval, on a grid
(:func:`ping_slot`), and cuts it (1011) when the previous ping is still unanswered as
the next one falls due. A :class:`KeepaliveWheel` holds every connection's next slot:
one timer per grid point that has connections due, where uvicorn arms a ping timer
and a pong timer per connection and ping; the ping frame (4 random bytes) is written
pre-encoded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import weakref
from collections.abc import Callable
from typing import Protocol, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState, PayloadTooBig
from websockets.frames import Frame
from websockets.http11 import Request
from websockets.protocol import State

from edge import replies
from edge.direct import DirectPath, GuardedTransport
from edge.errors import CloseCode, EdgeError, ErrorCode
from edge.wsframe import close_frame, ping_frame

log = logging.getLogger("edgemesh.edge")

SOCKET_EXTENSION = "edgemesh.socket"

# Keepalive pings fall due on this grid (seconds of the event loop's clock), so one
# wake-up of the edge pings every connection due in that second instead of one wake-up
# each: a connection's first ping goes out up to 0.9 step after the heartbeat interval
# (or 0.1 before), the next ones one interval apart (see ping_slot).
PING_GRID_S = 1.0


class RawSocket(Protocol):
    """What the app may do with a connection's transport, besides ASGI.

    The hot path may write to ``transport`` itself, provided it writes nothing once it
    has called :meth:`close_now` and nothing while ``transport.is_closing()`` (every
    close the protocol starts on its own closes the transport at once); or to the fd
    that ``direct`` hands out, by the rules of :mod:`edge.direct`.
    """

    transport: asyncio.Transport
    direct: DirectPath
    # Set by the connection's owner: called when a write leaves more than the send
    # buffer limit waiting (see edge.fanout).
    on_over_limit: Callable[[], None] | None
    # Set by the connection's owner: offered each text frame read while the ASGI queue
    # is empty; True when it handled the frame, False to have it queued as usual.
    on_text: Callable[[str], bool] | None

    def can_write(self) -> bool: ...

    def write(self, frame: bytes) -> None: ...

    def over_limit(self) -> None: ...

    def close_now(self, code: int, reason: str, grace_s: float, before: bytes = b"") -> None: ...


def ping_slot(due: float, grid_s: float = PING_GRID_S) -> float:
    """The grid point for a ping due at `due`: the first at or after ``due - grid_s / 10``.

    The slack keeps a connection on its slot: its next ping falls due one interval after
    the last was sent, a little after a grid point (timers run late); without it every
    ping would move on to the following grid point, one step late each time.
    """
    return math.ceil(due / grid_s - 0.1) * grid_s


class KeepaliveWheel:
    """Each connection's next keepalive, by grid slot; one timer per slot in use."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[float, set[EdgeWebSocketProtocol]] = {}

    def add(self, conn: EdgeWebSocketProtocol, due: float) -> float:
        """Call ``conn.keepalive_tick()`` at the slot of `due`; returns the slot."""
        slot = ping_slot(due)
        members = self.slots.get(slot)
        if members is None:
            members = self.slots[slot] = set()
            self.loop.call_at(slot, self._run, slot)
        members.add(conn)
        return slot

    def discard(self, conn: EdgeWebSocketProtocol, slot: float) -> None:
        members = self.slots.get(slot)
        if members is not None:
            members.discard(conn)  # an emptied slot's timer finds no one

    def _run(self, slot: float) -> None:
        for conn in self.slots.pop(slot, ()):
            try:
                conn.keepalive_tick()
            except Exception:  # one connection's failure must not stop the others' pings
                log.exception("keepalive failed for a connection")


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeepaliveWheel] = (
    weakref.WeakKeyDictionary()
)


def keepalive_wheel(loop: asyncio.AbstractEventLoop) -> KeepaliveWheel:
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = KeepaliveWheel(loop)
    return wheel


class EdgeWebSocketProtocol(WebSocketsSansIOProtocol):
    on_over_limit: Callable[[], None] | None = None
    on_text: Callable[[str], bool] | None = None
    direct: DirectPath
    keepalive_slot: float | None = None  # in the keepalive wheel, from accept to close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Everything the protocol writes goes through the guard of the direct path.
        inner = cast(asyncio.Transport, transport)
        self.direct = DirectPath(inner, self.can_write)
        super().connection_made(GuardedTransport(inner, self.direct, self._is_open))

    def connection_lost(self, exc: Exception | None) -> None:
        self.direct.close()
        super().connection_lost(exc)

    def _is_open(self) -> bool:
        return self.conn.state is State.OPEN and not self.close_sent

    def over_limit(self) -> None:
        """The connection's write buffer is over its limit (edge.fanout calls this)."""
        if self.on_over_limit is not None:
            self.on_over_limit()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # None when the handshake was refused
            scope["extensions"][SOCKET_EXTENSION] = self

    def data_received(self, data: bytes) -> None:
        # Frames that arrived before a parse failure are still handed to the app.
        self.conn.receive_data(data)
        self.handle_events()
        if self.conn.parser_exc is not None:
            self.handle_parser_exception()

    def send_receive_event_to_app(self) -> None:
        handler = self.on_text
        if (
            handler is not None
            and self.curr_msg_data_type == "text"
            and not self.close_sent
            and self.queue.empty()
        ):
            frames = self.frames
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                text = data.decode()
            except UnicodeDecodeError:
                text = None  # the library's own path closes with 1007
            if text is not None and handler(text):
                self.frames = []
                return
        super().send_receive_event_to_app()

    def handle_parser_exception(self) -> None:
        exc = self.conn.parser_exc
        if not isinstance(exc, PayloadTooBig) or self.close_sent:
            super().handle_parser_exception()
            return
        self.conn.data_to_send()  # drop the library's 1009 close: ours is 4009
        too_big = EdgeError(ErrorCode.TOO_LARGE, f"frame over {self.config.ws_max_size} bytes")
        self.transport.write(
            replies.error(None, too_big) + close_frame(CloseCode.FRAME_TOO_LARGE, "frame too large")
        )
        self.close_sent = True
        self.queue.put_nowait(
            {"type": "websocket.disconnect", "code": CloseCode.FRAME_TOO_LARGE, "reason": ""}
        )
        self.transport.close()

    # -- keepalive (see the module's docstring) ----------------------------------

    def start_keepalive(self) -> None:
        if self.ping_interval:
            wheel = keepalive_wheel(self.loop)
            self.keepalive_slot = wheel.add(self, self.loop.time() + self.ping_interval)

    def stop_keepalive(self) -> None:
        if self.keepalive_slot is not None:
            keepalive_wheel(self.loop).discard(self, self.keepalive_slot)
            self.keepalive_slot = None
        self.pending_ping_payload = None

    def keepalive_tick(self) -> None:
        """This connection's slot: cut it if its last ping went unanswered, else ping."""
        self.keepalive_slot = None
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        if self.pending_ping_payload is not None:
            self.keepalive_timeout()  # uvicorn's: close 1011 "keepalive ping timeout"
            return
        assert self.ping_interval is not None
        payload = random.getrandbits(32).to_bytes(4, "big")  # tells its pong from stale ones
        self.pending_ping_payload = payload
        self.ping_sent_at = now = self.loop.time()
        self.transport.write(ping_frame(payload))
        self.keepalive_slot = keepalive_wheel(self.loop).add(self, now + self.ping_interval)

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is not None and bytes(event.data) == self.pending_ping_payload:
            self.last_ping_rtt = self.loop.time() - self.ping_sent_at
            self.pending_ping_payload = None

    def shutdown(self) -> None:
        # uvicorn's server shutdown would cancel the abort timer of a close under way
        # (close_now) and wait for a flush a peer that stopped reading never allows:
        # keep the timer, it ends the connection within its grace.
        if self.close_sent and self.close_timer is not None:
            self.stop_keepalive()
            return
        super().shutdown()

    # -- RawSocket -------------------------------------------------------------

    def can_write(self) -> bool:
        return (
            self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
            and not self.transport.is_closing()
        )

    def write(self, frame: bytes) -> None:
        if self.can_write():
            self.transport.write(frame)

    def close_now(self, code: int, reason: str, grace_s: float, before: bytes = b"") -> None:
        """Write `before` and a close frame, then close; abort if not done in `grace_s`.

        Never blocks: a peer that stopped reading cannot hold the connection open.
        """
        if not self.can_write():
            return
        self.direct.leave()
        try:
            self.conn.send_close(code, reason)
        except InvalidState:
            return
        self.transport.write(before + b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(grace_s, self.transport.abort)
