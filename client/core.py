"""The client's protocol state, without I/O: what to send, and what a frame means. Pure.

The asyncio shell (:mod:`client.client`) moves frames; this keeps what must survive a
reconnect:

- **Publishes awaiting their ack**, in the order they were made, each with its
  ``message_id`` (one is made when the caller gives none). On a new connection they are
  sent again, in that order, with the same ids: a copy the server already stored is
  acked ``duplicate`` and delivered once.
- **Subscriptions** and the cursor of the last message each one received (or the
  position `subscribed` gave it). On a new connection each is subscribed again ``from``
  that cursor, so the server replays what the client missed, in any region.

Request ids are per connection: replies on an old connection are never matched to
requests of a new one.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from client.errors import PENDING_FULL, ClientError
from client.frames import Ack, Disconnect, Message, error_of

RATE_LIMITED = 42900
UNAVAILABLE = 50300


# -- what a frame means to the shell ---------------------------------------------------


@dataclass(frozen=True)
class Acked:
    key: int
    ack: Ack


@dataclass(frozen=True)
class PublishRefused:  # for good: the caller gets the error
    key: int
    code: int
    message: str


@dataclass(frozen=True)
class RetryLater:  # rate-limited: send it again after a pause
    key: int


@dataclass(frozen=True)
class Unavailable:  # the region cannot serve now: reconnect, elsewhere if need be
    code: int
    message: str


@dataclass(frozen=True)
class Subscribed:
    channel: str
    recovered: bool | None  # None on a first subscribe without `from`
    resumed: bool  # a subscribe the client made again on a new connection


@dataclass(frozen=True)
class SubscribeRefused:
    channel: str
    code: int
    message: str


@dataclass(frozen=True)
class Delivered:
    message: Message


@dataclass(frozen=True)
class Reply:  # to a plain request (unsubscribe, history, ping)
    rid: int
    doc: Mapping[str, Any]


@dataclass(frozen=True)
class ServerDisconnect:
    disconnect: Disconnect


@dataclass(frozen=True)
class Unexpected:  # an `error` with no request of ours, or a frame we cannot read
    code: int
    message: str


Event = (
    Acked
    | PublishRefused
    | RetryLater
    | Unavailable
    | Subscribed
    | SubscribeRefused
    | Delivered
    | Reply
    | ServerDisconnect
    | Unexpected
)


# -- state -----------------------------------------------------------------------------


@dataclass
class Pending:
    key: int
    channel: str
    data: Any
    name: str | None
    message_id: str
    rid: int | None = None  # its request id on the current connection, once sent there


@dataclass
class SubState:
    channel: str
    cursor: str | None  # resume after this; None until `subscribed` or a message gave one
    rewind: int | None  # for the first subscribe only
    rid: int | None = None
    confirmed: bool = False  # `subscribed` seen on the current connection
    sent: int = 0  # subscribe frames sent for it: more than one is a resume


@dataclass
class ClientCore:
    max_pending: int
    connected: bool = False
    pending: dict[int, Pending] = field(default_factory=dict)  # key -> publish, oldest first
    subs: dict[str, SubState] = field(default_factory=dict)
    _keys: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _rids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # request id -> ("publish", key) | ("subscribe", channel) | ("plain", None)
    _open: dict[int, tuple[str, Any]] = field(default_factory=dict)

    # -- the application's operations ------------------------------------------------

    def publish(
        self, channel: str, data: Any, name: str | None, message_id: str | None
    ) -> tuple[int, str, dict[str, Any] | None]:
        """Queue a publish: (its key, its message_id, the frame to send now or None while
        disconnected). Raises :class:`ClientError` ``pending_full`` at the limit."""
        if len(self.pending) >= self.max_pending:
            raise ClientError(
                PENDING_FULL, f"{len(self.pending)} publishes already await their ack"
            )
        mid = message_id if message_id is not None else f"c-{uuid.uuid4().hex}"
        p = Pending(next(self._keys), channel, data, name, mid)
        self.pending[p.key] = p
        return p.key, mid, self._send_publish(p) if self.connected else None

    def abandon(self, key: int) -> None:
        """Forget a publish the caller stopped waiting for: it is not sent again."""
        p = self.pending.pop(key, None)
        if p is not None and p.rid is not None:
            self._open.pop(p.rid, None)

    def resend(self, key: int) -> dict[str, Any] | None:
        p = self.pending.get(key)
        return self._send_publish(p) if p is not None and self.connected else None

    def subscribe(
        self, channel: str, cursor: str | None, rewind: int | None
    ) -> dict[str, Any] | None:
        s = SubState(channel, cursor, rewind)
        old = self.subs.get(channel)
        if old is not None and old.rid is not None:
            self._open.pop(old.rid, None)
        self.subs[channel] = s
        return self._send_subscribe(s) if self.connected else None

    def unsubscribe(self, channel: str) -> tuple[int, dict[str, Any]] | None:
        s = self.subs.pop(channel, None)
        if s is not None and s.rid is not None:
            self._open.pop(s.rid, None)
        if not self.connected:
            return None
        return self.request({"type": "unsubscribe", "channel": channel})

    def request(self, frame: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """A request that is not retried on another connection (history, ping)."""
        rid = next(self._rids)
        self._open[rid] = ("plain", None)
        return rid, {**frame, "id": rid}

    # -- the connection --------------------------------------------------------------

    def opened(self) -> list[dict[str, Any]]:
        """A new connection said `connected`: the frames to send first, in order (every
        subscription again from its cursor, then every publish awaiting its ack)."""
        self.connected = True
        self._open.clear()
        frames = [self._send_subscribe(s) for s in self.subs.values()]
        frames += [self._send_publish(p) for p in self.pending.values()]
        return frames

    def lost(self) -> list[int]:
        """The connection ended: the plain requests that will get no reply (their ids)."""
        self.connected = False
        plain = [rid for rid, (kind, _) in self._open.items() if kind == "plain"]
        self._open.clear()
        for p in self.pending.values():
            p.rid = None
        for s in self.subs.values():
            s.rid, s.confirmed = None, False
        return plain

    def receive(self, doc: Mapping[str, Any]) -> list[Event]:
        """What one server frame means."""
        if not isinstance(doc, Mapping):
            return [Unexpected(50000, f"a frame that is not an object: {doc!r:.80}")]
        kind = doc.get("type")
        try:
            if kind == "message":
                return self._message(doc)
            if kind == "disconnect":
                return [ServerDisconnect(Disconnect.from_frame(doc))]
            rid = doc.get("id")
            if not isinstance(rid, int) or rid not in self._open:
                if kind == "error":
                    return [Unexpected(*error_of(doc))]
                return []  # a reply to a request we gave up on
            what, ref = self._open.pop(rid)
            if what == "publish":
                return self._publish_reply(ref, doc)
            if what == "subscribe":
                return self._subscribe_reply(ref, rid, doc)
            return [Reply(rid, doc)]
        except (ValueError, TypeError, KeyError) as exc:
            return [Unexpected(50000, f"unreadable {kind!r} frame: {exc}")]

    # -- inside ------------------------------------------------------------------------

    def _send_publish(self, p: Pending) -> dict[str, Any]:
        p.rid = next(self._rids)
        self._open[p.rid] = ("publish", p.key)
        frame: dict[str, Any] = {
            "type": "publish",
            "id": p.rid,
            "channel": p.channel,
            "data": p.data,
            "message_id": p.message_id,
        }
        if p.name is not None:
            frame["name"] = p.name
        return frame

    def _send_subscribe(self, s: SubState) -> dict[str, Any]:
        s.rid = next(self._rids)
        s.confirmed = False
        s.sent += 1
        self._open[s.rid] = ("subscribe", s.channel)
        frame: dict[str, Any] = {"type": "subscribe", "id": s.rid, "channel": s.channel}
        if s.cursor is not None:
            frame["from"] = {"cursor": s.cursor}
        elif s.rewind is not None:
            frame["from"] = {"rewind": s.rewind}
        return frame

    def _message(self, doc: Mapping[str, Any]) -> list[Event]:
        m = Message.from_frame(doc)
        s = self.subs.get(m.channel)
        if s is None or not s.confirmed:
            return []  # unsubscribed, or from before a subscribe that restarts it
        s.cursor = m.cursor
        return [Delivered(m)]

    def _publish_reply(self, key: int, doc: Mapping[str, Any]) -> list[Event]:
        p = self.pending.get(key)
        if p is None:
            return []
        if doc.get("type") == "ack":
            del self.pending[key]
            return [Acked(key, Ack.from_frame(doc))]
        code, message = error_of(doc)
        p.rid = None
        if code == RATE_LIMITED:
            return [RetryLater(key)]
        if code == UNAVAILABLE:
            return [Unavailable(code, message)]  # sent again on the next connection
        del self.pending[key]
        return [PublishRefused(key, code, message)]

    def _subscribe_reply(self, channel: str, rid: int, doc: Mapping[str, Any]) -> list[Event]:
        s = self.subs.get(channel)
        if s is None or s.rid != rid:
            return []
        if doc.get("type") == "subscribed":
            if s.cursor is None:
                s.cursor = _str_or_none(doc.get("cursor"))
            s.confirmed = True
            recovered = doc.get("recovered")
            return [
                Subscribed(channel, recovered if isinstance(recovered, bool) else None, s.sent > 1)
            ]
        code, message = error_of(doc)
        if code == UNAVAILABLE:
            return [Unavailable(code, message)]  # subscribed again on the next connection
        del self.subs[channel]
        return [SubscribeRefused(channel, code, message)]


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
