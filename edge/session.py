"""One client connection: frames in, replies and deliveries out.

A :class:`ClientSession` is also the hub's sink: :meth:`send_frame` is the hot path
of fan-out (a pre-encoded frame written straight to the transport, then the write
buffer checked against the limit). Frames from the client are handled one at a
time, in order; publishes are pipelined (submitted in order, acked as they resolve).

A frame whose handling never waits (publish, ping, and any frame refused with an
error) is handled the moment it is read, by :meth:`ClientSession.handle_now`, when
the session is idle: no frame in hand, none queued. Every other frame goes through
the ASGI queue to :meth:`ClientSession.run`, and so do the frames read while one is
in hand, so the order holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edge import replies
from edge.capabilities import Operation
from edge.errors import CloseCode, EdgeError, ErrorCode, mesh_code
from edge.frames import (
    ClientFrame,
    FrameError,
    History,
    Ping,
    Publish,
    RequestId,
    Subscribe,
    Unsubscribe,
    parse_frame,
)
from edge.limits import PublishRateGuard, RateDecision
from edge.tokens import Principal
from edge.wsprotocol import RawSocket
from mesh.errors import MeshError
from mesh.hub import Subscribed
from mesh.publisher import Ack, Lane, Publication

if TYPE_CHECKING:
    from edge.node import EdgeNode

log = logging.getLogger("edgemesh.edge")

Receive = Callable[[], Any]


def new_connection_id() -> str:
    return "c-" + secrets.token_hex(8)


class ClientSession:
    def __init__(self, node: EdgeNode, socket: RawSocket, principal: Principal) -> None:
        self.node = node
        self.socket = socket
        self.principal = principal
        self.connection_id = new_connection_id()
        self.channels: set[str] = set()
        self.closing = False
        self.close_reason: str | None = None
        self._busy = False  # run() has a frame in hand
        limits = node.settings.limits
        self._max_buffer = limits.max_send_buffer_bytes
        self._rate = PublishRateGuard(limits, time.monotonic())
        # this connection's publishes keep their order (mesh.publisher.Lane)
        self._lane = Lane(int(time.time() * 1000))
        self._expiry: asyncio.TimerHandle | None = None
        self.transport = socket.transport  # what send_frame writes to
        socket.on_over_limit = self._over_limit
        # The fan-out must rebuild its lists when the connection leaves the direct write
        # path or may take it again (edge.direct).
        socket.direct.on_change = self._direct_changed

    # -- the hub's sink (hot path) ---------------------------------------------------

    def send_frame(self, frame: bytes) -> None:
        """Write one pre-encoded frame; cut the connection if its send buffer is full.

        Replies go this way too: a client that sends requests without reading the
        answers is cut off like any slow consumer.
        """
        t = self.transport
        if self.closing or t.is_closing():
            return
        t.write(frame)
        if t.get_write_buffer_size() > self._max_buffer:
            self._over_limit()

    def _direct_changed(self) -> None:
        self.node.hub_sink_changed(self)

    def _over_limit(self) -> None:
        if self.closing:
            return
        self.node.metrics.slow_consumers.inc()
        self.cut("slow_consumer", CloseCode.TRY_AGAIN_LATER)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Send `connected` and arm the token's expiry."""
        node = self.node
        self.send_frame(
            replies.connected(
                self.connection_id,
                self.principal.client_id,
                node.region,
                node.edge_name,
                node.settings.limits.max_message_bytes,
                node.settings.heartbeat_interval_s,
                node.fallback_regions(),
            )
        )
        if self.principal.expires_at is not None:
            delay = max(0.0, self.principal.expires_at - time.time())
            self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)
        self.socket.on_text = self.handle_now

    def _expired(self) -> None:
        self.cut("token_expired", CloseCode.UNAUTHORIZED)

    def cut(
        self,
        reason: str,
        code: int,
        reconnect: bool = True,
        fallback_regions: list[str] | None = None,
    ) -> None:
        """Send `disconnect` with `reason`, then close with `code`. Idempotent."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        drain = self.node.settings.drain
        regions = self.node.fallback_regions() if fallback_regions is None else fallback_regions
        frame = replies.disconnect(reason, reconnect, drain.retry_after_ms, regions)
        self.socket.close_now(code, reason, drain.close_grace_s, before=frame)
        # Leave the hub now: the fan-out writes to the hub's sinks without asking them
        # (safe from inside the fan-out loop too: it goes on over its own snapshot).
        self.node.hub_drop(self)

    async def run(self, receive: Receive) -> str:
        """Handle frames until the connection ends. Returns the disconnect reason."""
        try:
            while True:
                self._busy = False
                event = await receive()
                self._busy = True
                kind = event["type"]
                if kind == "websocket.disconnect":
                    if self.close_reason is None:
                        self.close_reason = (
                            "frame_too_large"
                            if event.get("code") == CloseCode.FRAME_TOO_LARGE
                            else "client_closed"
                        )
                    break
                if self.closing:
                    continue
                text = event.get("text")
                if text is None:
                    self._reply_error(None, EdgeError(ErrorCode.BAD_REQUEST, "text frames only"))
                    continue
                await self.handle(text)
        finally:
            self.closing = True
            self.socket.on_text = None
            if self._expiry is not None:
                self._expiry.cancel()
            self.node.hub_drop(self)
        return self.close_reason or "client_closed"

    # -- frames --------------------------------------------------------------------

    def handle_now(self, text: str) -> bool:
        """Handle a frame just read if that needs no waiting and the session is idle.

        False leaves it to the ASGI queue and :meth:`run` (the protocol queues it).
        """
        if self._busy or self.closing:
            return False
        frame = self._parse(text)
        if frame is None:  # refused, and answered
            return True
        if not isinstance(frame, Publish | Ping):
            return False
        try:
            self._dispatch_now(frame)
        except Exception as exc:
            self._failed(frame, exc)
        return True

    async def handle(self, text: str) -> None:
        frame = self._parse(text)
        if frame is None:
            return
        try:
            if isinstance(frame, Publish | Ping):
                self._dispatch_now(frame)
            elif isinstance(frame, Subscribe):
                await self._subscribe(frame)
            elif isinstance(frame, Unsubscribe):
                await self._unsubscribe(frame)
            elif isinstance(frame, History):
                await self._history(frame)
        except Exception as exc:
            self._failed(frame, exc)

    def _parse(self, text: str) -> ClientFrame | None:
        """The frame, or None when it is refused (the refusal is sent)."""
        node = self.node
        try:
            limits = node.settings.limits
            return parse_frame(
                text, limits.max_message_bytes, node.settings.mesh.max_rewind, limits
            )
        except FrameError as exc:
            if exc.publish:
                node.metrics.publishes.inc()
                self._reply_nack(exc.request_id, exc)
            else:
                self._reply_error(exc.request_id, exc)
            return None
        except Exception:  # a parser bug must not end the connection (nor its reader)
            log.exception("internal error parsing a frame")
            self._reply_error(None, EdgeError(ErrorCode.INTERNAL, "internal error"))
            return None

    def _dispatch_now(self, frame: Publish | Ping) -> None:
        if isinstance(frame, Publish):
            self._publish(frame)
        else:
            self.send_frame(replies.pong(frame.id))

    def _failed(self, frame: ClientFrame, exc: Exception) -> None:
        """Answer a frame whose handling raised (call from its except block)."""
        if isinstance(exc, EdgeError):
            self._reply_error(frame.id, exc)
        elif isinstance(exc, MeshError):
            self._reply_error(frame.id, EdgeError(mesh_code(exc), str(exc)))
        else:
            log.exception("internal error handling a %s frame", type(frame).__name__)
            self._reply_error(frame.id, EdgeError(ErrorCode.INTERNAL, "internal error"))

    def _allow(self, op: Operation, channel: str) -> None:
        if not self.principal.capabilities.allows(op, channel):
            raise EdgeError(ErrorCode.FORBIDDEN, f"token does not allow {op} on this channel")

    def _publish(self, frame: Publish) -> None:
        node = self.node
        node.metrics.publishes.inc()
        rid = frame.id
        try:
            self._allow(Operation.PUBLISH, frame.channel)
            decision = self._rate.check(time.monotonic())
            if decision == RateDecision.CUT:
                self._reply_nack(rid, EdgeError(ErrorCode.RATE_LIMITED, "rate limit exceeded"))
                self.cut("rate_limited", CloseCode.RATE_LIMITED)
                return
            if decision == RateDecision.REFUSE:
                raise EdgeError(ErrorCode.RATE_LIMITED, "rate limit exceeded")
            future = node.submit(
                Publication(
                    frame.channel,
                    frame.data,
                    frame.name,
                    frame.message_id,
                    self.principal.client_id,
                    self.principal.key_id,
                ),
                self._lane,
            )
        except EdgeError as exc:
            self._reply_nack(rid, exc)
            return
        except Exception as exc:
            self._reply_nack(rid, node.publish_error(exc))
            return
        started = time.monotonic()

        def done(f: asyncio.Future[Ack]) -> None:
            node.metrics.publish_ack_seconds.observe(time.monotonic() - started)
            exc = f.exception()
            if exc is None:
                a = f.result()
                node.metrics.acks.inc("true" if a.duplicate else "false")
                self.send_frame(replies.ack(rid, a.serial, a.message_id, a.duplicate))
            else:
                self._reply_nack(rid, node.publish_error(exc))

        future.add_done_callback(done)

    async def _subscribe(self, frame: Subscribe) -> None:
        node = self.node
        self._allow(Operation.SUBSCRIBE, frame.channel)
        new = frame.channel not in self.channels
        limit = node.settings.limits.max_channels_per_connection
        if new and len(self.channels) >= limit:
            raise EdgeError(
                ErrorCode.RATE_LIMITED, f"too many channels on one connection (limit {limit})"
            )
        hub = node.require_hub()
        if new:
            self.channels.add(frame.channel)
        rid = frame.id

        def on_subscribed(s: Subscribed) -> None:
            if self.closing:
                return
            self.send_frame(replies.subscribed(rid, frame.channel, s.cursor, s.recovered))
            for f in s.replay_frames:
                self.send_frame(f)

        try:
            await hub.subscribe(frame.channel, self, frame.start, on_subscribed)
        except BaseException:
            # A failed subscribe leaves the channel unsubscribed, also when it replaced
            # an earlier subscription of this connection.
            self.channels.discard(frame.channel)
            if not new:
                with contextlib.suppress(Exception):
                    await hub.unsubscribe(frame.channel, self)
            raise
        if self.closing:  # the connection ended while the hub was subscribing
            node.hub_drop(self)

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        if frame.channel in self.channels:
            self.channels.discard(frame.channel)
            await self.node.require_hub().unsubscribe(frame.channel, self)
        self.send_frame(replies.unsubscribed(frame.id, frame.channel))

    async def _history(self, frame: History) -> None:
        self._allow(Operation.HISTORY, frame.channel)
        page = await self.node.history_page(frame.channel, frame.limit, frame.after)
        entries = ((e.message, e.cursor) for e in page.entries)
        self.send_frame(replies.history_page(frame.id, frame.channel, entries, page.cursor))

    # -- replies -------------------------------------------------------------------

    def _reply_error(self, rid: RequestId, err: EdgeError) -> None:
        self.node.metrics.errors.inc(str(int(err.code)))
        self.send_frame(replies.error(rid, err))

    def _reply_nack(self, rid: RequestId, err: EdgeError) -> None:
        self.node.metrics.nacks.inc(str(int(err.code)))
        self.send_frame(replies.nack(rid, err))
