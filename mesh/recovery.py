"""The delivery rules of one channel: order, gaps, duplicates, replay merge. Pure.

:class:`ChannelLedger` holds, per origin region, the last sequence delivered on the
channel and the dedup keys delivered within the dedup window. The hub feeds it every
message (live, repaired or swept) in arrival order and delivers only what it accepts.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from mesh.message import StoredMessage


class Verdict(Enum):
    DELIVER = "deliver"  # next in its origin's chain (or the first seen): accept it
    OLD = "old"  # at or before what was delivered: drop silently
    GAP = "gap"  # messages between the last delivered and this one are missing: repair first


@dataclass(frozen=True)
class Gap:
    """Missing messages of `origin`: every stored seq in (after, upto] of the channel."""

    origin: str
    after: int
    upto: int


class ChannelLedger:
    """Per-origin delivered sequences and recently delivered dedup keys of one channel.

    A position of ``None`` means "unknown baseline": the first message from that origin
    is accepted as is (no repair reaches back into history on its behalf).
    """

    def __init__(
        self,
        positions: Mapping[str, int | None],
        dedup_window_ms: int,
        dedup_memory: int,
    ) -> None:
        self.delivered: dict[str, int | None] = dict(positions)
        self.window_ms = dedup_window_ms
        self.memory = dedup_memory
        self._seen: OrderedDict[str, int] = OrderedDict()
        self.duplicates = 0  # messages refused because their key was delivered already

    def classify(self, msg: StoredMessage) -> Verdict:
        d = self.delivered.get(msg.origin)
        if d is None:
            return Verdict.DELIVER
        if msg.seq <= d:
            return Verdict.OLD
        if msg.last_seq is not None and msg.last_seq > d:
            return Verdict.GAP
        return Verdict.DELIVER

    def gap(self, msg: StoredMessage) -> Gap:
        """The gap `msg` reveals (call only when classify() said GAP)."""
        d = self.delivered.get(msg.origin) or 0
        return Gap(msg.origin, d, msg.last_seq if msg.last_seq is not None else msg.seq - 1)

    def accept(self, msg: StoredMessage) -> bool:
        """Advance past `msg`. True when it must be delivered, False when it is old or a
        duplicate (same dedup key delivered within the window, from any origin)."""
        d = self.delivered.get(msg.origin)
        if d is not None and msg.seq <= d:
            return False
        self.delivered[msg.origin] = msg.seq
        key = msg.dedup_key
        if key is None:
            return True
        seen = self._seen.get(key)
        if seen is not None and abs(msg.timestamp_ms - seen) <= self.window_ms:
            self.duplicates += 1
            return False
        self._remember(key, msg.timestamp_ms)
        return True

    def _remember(self, key: str, ts: int) -> None:
        seen = self._seen
        seen[key] = ts
        seen.move_to_end(key)
        horizon = ts - self.window_ms
        while seen:
            first_key = next(iter(seen))
            if len(seen) > self.memory or seen[first_key] < horizon:
                del seen[first_key]
            else:
                break

    def seed(self, keys: Mapping[str, int]) -> None:
        """Remember dedup keys (with their timestamps) of messages stored before this
        ledger's live point: a later copy of one of them is a duplicate."""
        for key, ts in sorted(keys.items(), key=lambda kv: kv[1]):
            if key not in self._seen:
                self._remember(key, ts)

    def positions(self) -> dict[str, int]:
        """The known positions (the live point of this channel), unknown ones as 0."""
        return {r: s or 0 for r, s in self.delivered.items()}


def merge_by_time(per_origin: Iterable[Sequence[StoredMessage]]) -> list[StoredMessage]:
    """Merge per-origin runs (each in sequence order) by timestamp, keeping each run's order."""
    return list(heapq.merge(*per_origin, key=lambda m: (m.timestamp_ms, m.origin, m.seq)))


def drop_duplicates(
    messages: Iterable[StoredMessage],
    window_ms: int,
    before: Mapping[str, int] | None = None,
) -> list[StoredMessage]:
    """`messages` without the later copies of a dedup key seen within `window_ms`.

    `before` holds the dedup keys (with their timestamps) of messages the reader already
    has (at or before its cursor): a copy of one of those is dropped too.
    """
    seen: dict[str, int] = dict(before or {})
    out = []
    for m in messages:
        if m.dedup_key is not None:
            first = seen.get(m.dedup_key)
            if first is not None and abs(m.timestamp_ms - first) <= window_ms:
                continue
            seen[m.dedup_key] = m.timestamp_ms
        out.append(m)
    return out


def dedup_keys(messages: Iterable[StoredMessage]) -> dict[str, int]:
    """The dedup keys of `messages`, each with its newest timestamp."""
    out: dict[str, int] = {}
    for m in messages:
        if m.dedup_key is not None and m.timestamp_ms >= out.get(m.dedup_key, m.timestamp_ms):
            out[m.dedup_key] = m.timestamp_ms
    return out


def lookbehind_start(messages: Iterable[StoredMessage], window_ms: int) -> int | None:
    """How far back (timestamp, ms) a message stored before `messages` can be a copy of
    one of them: the earliest keyed message's time minus the window. None when no message
    has a dedup key (nothing to look behind for)."""
    times = [m.timestamp_ms for m in messages if m.dedup_key is not None]
    return min(times) - window_ms if times else None


def run_is_complete(after: int, run: Sequence[StoredMessage], upto: int, anchored: bool) -> bool:
    """Whether `run` (an origin's messages of the channel after seq `after`, in order)
    provably holds every message of the channel in (after, upto].

    Retention removes a channel's messages oldest first, never from the middle. So
    when the copy still holds the message at `after` (`anchored`), nothing after it was
    removed, and the run is complete once it reaches `upto`.
    """
    if upto <= after:
        return True
    return anchored and bool(run) and run[-1].seq >= upto
