"""Reading a channel's stored messages as this region sees them: the local copies
first (the region's stream and its mirrors), the origin stream itself when a mirror
lags. Used by the hub for gap repair, sweeps, resume and rewind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.client import Client

from mesh.cursor import Cursor
from mesh.directget import DirectReader, OriginReader
from mesh.errors import CursorError, MeshUnavailable
from mesh.message import StoredMessage
from mesh.recovery import (
    dedup_keys,
    drop_duplicates,
    lookbehind_start,
    merge_by_time,
    run_is_complete,
)
from mesh.replies import ReplyMux
from mesh.settings import MeshSettings
from mesh.subjects import mirror_name, stored_subject, stream_name


@dataclass(frozen=True)
class Replay:
    messages: list[StoredMessage]  # merged across origins by timestamp, no duplicates
    before: Cursor  # the channel position just before the first message
    recovered: bool
    reach: Cursor  # how far the replay read, per origin
    lookbehind_capped: bool = False  # more messages before the cursor than dedup_lookbehind


async def keys_before(
    reader: DirectReader,
    regions: tuple[str, ...],
    token: str,
    channel: str,
    cursor: Cursor,
    since_ms: int,
    cap: int,
) -> tuple[dict[str, int], bool]:
    """The dedup keys (with timestamps) of the messages at or before `cursor` stored
    since `since_ms`, read from the local copies: at most `cap` messages per origin (the
    newest), and whether an origin had more. An origin whose copy does not answer is
    skipped (dedup is then best effort; the replay itself does not depend on it)."""
    origins = [o for o in regions if cursor.get(o) > 0]
    results = await asyncio.gather(
        *(
            reader.since(
                stream_name(o), stored_subject(o, token), channel, since_ms, cursor.get(o), cap
            )
            for o in origins
        ),
        return_exceptions=True,
    )
    keys: dict[str, int] = {}
    capped = False
    for result in results:
        if isinstance(result, MeshUnavailable):
            continue
        if isinstance(result, BaseException):
            raise result
        run, more = result
        capped = capped or more
        for key, ts in dedup_keys(run).items():
            keys[key] = max(ts, keys.get(key, ts))
    return keys, capped


async def keys_behind(
    reader: DirectReader,
    regions: tuple[str, ...],
    token: str,
    channel: str,
    cursor: Cursor,
    messages: list[StoredMessage],
    window_ms: int,
    cap: int,
) -> tuple[dict[str, int], bool]:
    """:func:`keys_before` for the window a copy of one of `messages` may lie in (the
    earliest keyed message's time minus the dedup window); nothing when none has a key."""
    since = lookbehind_start(messages, window_ms)
    if since is None:
        return {}, False
    return await keys_before(reader, regions, token, channel, cursor, since, cap)


class ChannelStore:
    def __init__(
        self, nc: Client, region: str, regions: tuple[str, ...], settings: MeshSettings
    ) -> None:
        self.region = region
        self.regions = regions
        self.settings = settings
        self.local = DirectReader(nc, ReplyMux(nc), settings.request_timeout_s)
        self.origin = OriginReader(nc, settings.request_timeout_s)
        self._window_ms = int(settings.duplicate_window_s * 1000)

    async def baseline(self, channel: str, token: str) -> dict[str, int | None]:
        """Each origin's newest seq of the channel in the local copies (None: the copy did
        not answer). Raises MeshUnavailable when the region's own stream does not."""
        lasts = await asyncio.gather(
            *(
                self.local.last(stream_name(o), stored_subject(o, token), channel)
                for o in self.regions
            ),
            return_exceptions=True,
        )
        out: dict[str, int | None] = {}
        for origin, last in zip(self.regions, lasts, strict=True):
            if isinstance(last, MeshUnavailable):
                if origin == self.region:
                    raise last
                out[origin] = None
            elif isinstance(last, BaseException):
                raise last
            else:
                out[origin] = last.seq if last else 0
        return out

    async def fetch_range(
        self,
        channel: str,
        token: str,
        origin: str,
        after: int,
        upto: int,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> list[StoredMessage]:
        """The stored messages of (after, upto]: from the local copy; what a lagging mirror
        lacks, from the origin itself; when neither has it yet, retry until
        ``repair_timeout_s``. Returns what it found (possibly short of `upto`)."""
        stream = stream_name(origin)
        subject = stored_subject(origin, token)
        deadline = time.monotonic() + self.settings.repair_timeout_s
        batch = self.settings.replay_batch
        pause = 0.005
        run: list[StoredMessage] = []
        while True:
            with contextlib.suppress(MeshUnavailable):
                run = await self.local.range(stream, subject, channel, after, upto, batch)
            have = run[-1].seq if run else after
            if have >= upto:
                return run
            if origin != self.region:
                with contextlib.suppress(MeshUnavailable):
                    rest = await self.origin.range(
                        stream, subject, channel, have, upto, self.settings.max_origin_reads
                    )
                    if rest and rest[-1].seq >= upto:
                        return run + rest
            if time.monotonic() + pause > deadline or cancelled():
                return run
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.2)

    async def origin_newest(self, token: str, origin: str) -> int | None:
        """`origin`'s newest seq of the channel, asked of the origin stream itself; None
        when it does not answer within ``origin_check_timeout_s``."""
        try:
            return await self.origin.last_seq(
                stream_name(origin),
                stored_subject(origin, token),
                timeout_s=self.settings.origin_check_timeout_s,
            )
        except MeshUnavailable:
            return None

    async def origin_answers(self, origin: str) -> bool:
        # No channel has the token "~00" (it would be a NUL byte): a cheap 404.
        return await self.origin_newest("~00", origin) is not None

    async def newest(self, channel: str, token: str, origin: str, ask_origin: bool) -> int | None:
        """The channel's newest seq in `origin`: from a remote origin itself when it
        answers (a mirror may lag), else from the local copy. None when unknown."""
        if ask_origin and origin != self.region:
            truth = await self.origin_newest(token, origin)
            if truth is not None:
                return truth
        with contextlib.suppress(MeshUnavailable):
            last = await self.local.last(
                stream_name(origin), stored_subject(origin, token), channel
            )
            return last.seq if last else 0
        return None

    async def after_cursor(self, channel: str, token: str, cursor: Cursor, live: Cursor) -> Replay:
        """Everything after `cursor`, up to the live point or, for a remote origin that
        answers, up to its true newest message (a mirror may lag; live copies may be in
        flight).

        `recovered` is True only when every origin's run provably has no hole and every
        remote origin confirmed its newest message: with an origin unreachable, the edge
        cannot show that nothing after the local copy's end was stored there. Raises
        CursorError for a position beyond an origin's newest message of the channel.
        """
        remote = [o for o in self.regions if o != self.region]
        truths = await asyncio.gather(*(self.origin_newest(token, o) for o in remote))
        truth: dict[str, int | None] = dict(zip(remote, truths, strict=True))
        own = await self.local.last(
            stream_name(self.region), stored_subject(self.region, token), channel
        )
        truth[self.region] = own.seq if own else 0
        runs: list[list[StoredMessage]] = []
        recovered = all(t is not None for t in truths)
        reach: dict[str, int] = {}
        for origin in self.regions:
            after, newest = cursor.get(origin), truth[origin]
            if newest is not None and after > 0:
                # A channel's newest message outlives every older one (retention removes
                # the oldest first), so a position past it was never this channel's.
                if newest > 0 and after > newest:
                    raise CursorError(f"cursor is ahead of this channel's messages from {origin}")
                if newest == 0:
                    recovered = False  # all expired: nothing shows what followed the cursor
            upto = max(live.get(origin), newest or 0)
            if upto <= after:
                continue
            run = await self.fetch_range(channel, token, origin, after, upto)
            anchored = await self._anchored(channel, token, origin, after)
            if not run_is_complete(after, run, upto, anchored):
                recovered = False
            if run:
                reach[origin] = run[-1].seq
            runs.append(run)
        merged = merge_by_time(runs)
        # A message the client had at or before its cursor may come again as a copy
        # stored in another region (a publisher's retry after a failover): look behind
        # the cursor, within the dedup window, for the ids it already has.
        before, capped = await keys_behind(
            self.local,
            self.regions,
            token,
            channel,
            cursor,
            merged,
            self._window_ms,
            self.settings.dedup_lookbehind,
        )
        merged = drop_duplicates(merged, self._window_ms, before)
        return Replay(merged, cursor, recovered, Cursor(reach), capped)

    async def _anchored(self, channel: str, token: str, origin: str, after: int) -> bool:
        """Whether no message of the channel from `origin` after `after` can have been
        removed from the local copy.

        Retention removes a channel's messages oldest first. So it suffices that the copy
        still holds the message at `after`; for `after` 0 (from the beginning), that the
        copy never removed a message by age (its first sequence is 1) nor by count (the
        channel holds fewer than ``max_msgs_per_channel``).
        """
        stream = stream_name(origin)
        subject = stored_subject(origin, token)
        try:
            if after > 0:
                return await self.local.holds(stream, subject, channel, after)
            copy = stream if origin == self.region else mirror_name(origin, self.region)
            if await self.local.first_seq(copy) > 1:
                return False
            first = await self.local.pending_from(stream, subject, channel, 1)
            return first is None or first[1] + 1 < self.settings.max_msgs_per_channel
        except MeshUnavailable:
            return False

    async def last(self, channel: str, token: str, count: int, live: Cursor) -> Replay:
        """The last `count` messages at or before the live point, across origins.

        `recovered` is True when `count` messages were found or provably none was
        ever removed from the channel's history.
        """
        if count <= 0:
            return Replay([], live, True, Cursor())
        runs: list[list[StoredMessage]] = []
        whole = True
        for origin in self.regions:
            upto = live.get(origin)
            if upto <= 0:
                continue
            run = await self.local.last_n(
                stream_name(origin),
                stored_subject(origin, token),
                channel,
                count,
                upto,
                self.settings.replay_batch,
            )
            if len(run) < count and not await self._anchored(channel, token, origin, 0):
                whole = False
            runs.append(run)
        merged = drop_duplicates(merge_by_time(runs), self._window_ms)[-count:]
        # Just before each origin's first replayed message (no message of the channel lies
        # between); the live point for an origin none of whose messages is replayed.
        before = dict(live.positions)
        for m in reversed(merged):
            before[m.origin] = m.seq - 1
        return Replay(merged, Cursor(before), len(merged) >= count or whole, Cursor())
