"""Was this publish already stored in another region? The cross-region half of idempotency.

JetStream deduplicates ``Nats-Msg-Id`` within one stream, so a retry in the region that
stored the first attempt is acknowledged as a duplicate by JetStream itself. A retry in
another region (the publisher failed over: its first attempt was stored, its ack lost)
reaches a stream that never saw it. Before storing such a retry, the publisher looks in
this region's copies (mirrors) of the other regions' streams for the same dedup key on
the same channel within the dedup window, and acknowledges the first copy when it finds
one. A copy that has not received the first attempt yet (mirror lag, or an origin that
failed before its mirrors had it) cannot show it: then the retry is stored, and the
hub's dedup delivers it once.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mesh.directget import DirectReader
from mesh.errors import MeshUnavailable
from mesh.message import StoredMessage
from mesh.subjects import stored_subject, stream_name


def may_retry_elsewhere(opened_ms: int | None, now_ms: int, window_ms: int) -> bool:
    """Whether a publish with a ``message_id`` made at `now_ms` on a connection opened at
    `opened_ms` can be a retry, within the dedup window, of an attempt made in another
    region.

    That attempt was made on another connection (to another region), before this one
    opened; a retry more than `window_ms` after it is a new message anyway. So only a
    connection younger than the window can carry such a retry. A REST request
    (`opened_ms` None) can come from anywhere at any time.
    """
    return opened_ms is None or now_ms - opened_ms <= window_ms


class Copy(NamedTuple):
    """Where a dedup key was first stored (what an ack names), without the message."""

    origin: str
    seq: int
    timestamp_ms: int

    @property
    def serial(self) -> str:
        return f"{self.origin}:{self.seq}"


@dataclass(slots=True)
class _Seen:
    """What one origin's copy holds of one channel, as far as it was read."""

    upto: int  # the last sequence read (0: none)
    keys: dict[str, Copy] = field(default_factory=dict)  # dedup key -> first copy, in order


class RecentKeys:
    """The dedup keys each other region stored on a channel within the window, read from
    this region's copies of their streams and remembered, so that a lookup reads only what
    was stored since the last one.

    The first lookup of a (region, channel) asks the copy for the channel's newest message,
    and when that is within the window reads the window (at most `cap` messages, the
    newest); lookups that come meanwhile wait for that read instead of making their own.
    Every later lookup reads only the messages after the last one read (one batch direct
    get, nothing more while the channel is quiet), so publishes on a busy channel do not
    each read its whole window. Only keys are kept (no message data): at most `cap` per
    (region, channel), the newest, and at most `max_keys` in all (~200 bytes each), the
    least recently used channels forgotten first; keys older than the window are dropped
    as lookups go.

    `live(channel, origin)`, when given, is the last sequence of `origin` on `channel`
    that this edge knows of from live delivery (``ChannelHub.live_position``; None when
    it does not follow the channel): when that is not beyond what was read, nothing new
    came, and a later lookup reads nothing at all.
    """

    def __init__(
        self,
        reader: DirectReader,
        cap: int,
        max_keys: int = 100_000,
        live: Callable[[str, str], int | None] | None = None,
    ) -> None:
        self.reader = reader
        self.cap = cap
        self.max_keys = max_keys
        self.live = live
        self.total = 0  # keys remembered, in all
        self.skipped = 0  # later lookups that read nothing: live delivery saw nothing new
        self._seen: OrderedDict[tuple[str, str], _Seen] = OrderedDict()
        self._first: dict[tuple[str, str], asyncio.Future[_Seen]] = {}

    def find_now(
        self, origin: str, token: str, channel: str, key: str, since_ms: int
    ) -> tuple[bool, Copy | None]:
        """(True, what :meth:`find` would say) when that needs no read: the channel was
        read before and live delivery shows nothing new from `origin` since; else
        (False, None)."""
        if not self.answers_now(origin, token, channel):
            return False, None
        at = (origin, token)
        seen = self._seen[at]
        self.skipped += 1
        self._seen.move_to_end(at)
        return True, self._lookup(at, seen, key, since_ms)

    def answers_now(self, origin: str, token: str, channel: str) -> bool:
        """Whether :meth:`find_now` can answer for `origin` on `channel` (no side effect)."""
        seen = self._seen.get((origin, token))
        if seen is None or self.live is None:
            return False
        known = self.live(channel, origin)
        return known is not None and known <= seen.upto

    async def find(
        self, origin: str, token: str, channel: str, key: str, since_ms: int
    ) -> Copy | None:
        """Where `origin` stored `key` on `channel` from `since_ms` on, if it did."""
        decided, found = self.find_now(origin, token, channel, key, since_ms)
        if decided:
            return found
        at = (origin, token)
        seen = self._seen.get(at)
        if seen is None:
            first = self._first.get(at)
            if first is None:
                first = asyncio.ensure_future(self._first_read(at, channel, since_ms))
                self._first[at] = first
                first.add_done_callback(lambda f: self._first_done(at, f))
            seen = await asyncio.shield(first)  # a waiter's cancel is not everyone's
        else:
            stream, subject = stream_name(origin), stored_subject(origin, token)
            new = await self.reader.after(stream, subject, channel, seen.upto, self.cap)
            self._add(at, seen, new)
            if self._seen.get(at) is seen:
                self._seen.move_to_end(at)
                self._evict()
        return self._lookup(at, seen, key, since_ms)

    def _lookup(self, at: tuple[str, str], seen: _Seen, key: str, since_ms: int) -> Copy | None:
        self._drop_before(at, seen, since_ms)
        found = seen.keys.get(key)
        return found if found is not None and found.timestamp_ms >= since_ms else None

    def _first_done(self, at: tuple[str, str], first: asyncio.Future[_Seen]) -> None:
        self._first.pop(at, None)
        if not first.cancelled():
            first.exception()  # retrieved: when every waiter gave up, nobody else will

    async def _first_read(self, at: tuple[str, str], channel: str, since_ms: int) -> _Seen:
        origin, token = at
        stream, subject = stream_name(origin), stored_subject(origin, token)
        newest = await self.reader.last(stream, subject, channel)
        seen = _Seen(upto=0 if newest is None else newest.seq)
        run: list[StoredMessage] = []
        if newest is not None and newest.timestamp_ms >= since_ms:
            run, _capped = await self.reader.since(
                stream, subject, channel, since_ms, newest.seq, self.cap
            )
        self._seen[at] = seen
        self._add(at, seen, run)
        self._evict()
        return seen

    def _evict(self) -> None:
        """Forget the least recently used channels while over `max_keys` (never the last
        one, just used)."""
        while self.total > self.max_keys and len(self._seen) > 1:
            _, gone = self._seen.popitem(last=False)
            self.total -= len(gone.keys)

    def _add(self, at: tuple[str, str], seen: _Seen, messages: Sequence[StoredMessage]) -> None:
        counted = self._seen.get(at) is seen  # (a channel forgotten meanwhile is not)
        keys = seen.keys
        for m in messages:
            if m.seq > seen.upto:
                seen.upto = m.seq
            if m.dedup_key is not None and m.dedup_key not in keys:
                keys[m.dedup_key] = Copy(m.origin, m.seq, m.timestamp_ms)
                if counted:
                    self.total += 1
        while len(keys) > self.cap:  # the newest `cap`: drop from the front
            del keys[next(iter(keys))]
            if counted:
                self.total -= 1

    def _drop_before(self, at: tuple[str, str], seen: _Seen, since_ms: int) -> None:
        """Drop the keys stored before `since_ms`: they were added in stream order, so from
        the front (an origin's clock stepping back only keeps a key a little longer)."""
        counted = self._seen.get(at) is seen
        keys = seen.keys
        while keys:
            first = next(iter(keys))
            if keys[first].timestamp_ms >= since_ms:
                return
            del keys[first]
            if counted:
                self.total -= 1


def find_elsewhere_now(
    recent: RecentKeys,
    origins: Sequence[str],
    token: str,
    channel: str,
    key: str,
    since_ms: int,
) -> tuple[bool, Copy | None]:
    """:func:`find_elsewhere` when every origin can answer without a read
    (:meth:`RecentKeys.find_now`): (True, the first copy or None); else (False, None)."""
    if not all(recent.answers_now(o, token, channel) for o in origins):
        return False, None
    found: Copy | None = None
    for origin in origins:
        _, copy = recent.find_now(origin, token, channel, key, since_ms)
        if copy is not None and (found is None or copy.timestamp_ms < found.timestamp_ms):
            found = copy
    return True, found


async def find_elsewhere(
    recent: RecentKeys,
    origins: Sequence[str],
    token: str,
    channel: str,
    key: str,
    since_ms: int,
) -> tuple[Copy | None, bool]:
    """The first stored copy of dedup key `key` on `channel` (subject token `token`)
    among the messages the local copies of `origins`' streams hold from `since_ms` on,
    and whether every copy answered.

    A copy that does not answer is skipped: the caller stores the publish (best effort,
    as before this check existed).
    """
    results = await asyncio.gather(
        *(recent.find(o, token, channel, key, since_ms) for o in origins),
        return_exceptions=True,
    )
    found: Copy | None = None
    answered = True
    for result in results:
        if isinstance(result, MeshUnavailable):
            answered = False
        elif isinstance(result, BaseException):
            raise result
        elif result is not None and (found is None or result.timestamp_ms < found.timestamp_ms):
            found = result
    return found, answered
