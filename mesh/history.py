"""Channel history pages, merged across origins, and the staleness of this region's mirrors.

History is read from the local copies (the region's own stream and its mirrors), so it
keeps working while another region is down. A page holds up to `limit` messages after a
cursor, oldest first, merged across origins by timestamp; its cursor, passed as `after`,
gives the next page, so paging yields every retained message exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from mesh.cancellation import cancel_and_wait
from mesh.channels import channel_token
from mesh.cursor import Cursor, decode_cursor, encode_positions
from mesh.directget import DirectReader
from mesh.errors import CursorError
from mesh.message import StoredMessage
from mesh.recovery import dedup_keys, merge_by_time
from mesh.replay import keys_behind
from mesh.replies import ReplyMux
from mesh.settings import MeshSettings
from mesh.subjects import mirror_name, stored_subject, stream_name
from mesh.topology import Topology

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryEntry:
    message: StoredMessage
    cursor: str  # the channel position just after this message


@dataclass(frozen=True)
class HistoryPage:
    entries: list[HistoryEntry]
    cursor: str  # pass as `after` for the next page


def build_page(
    channel: str,
    after: Cursor,
    runs: list[list[StoredMessage]],
    limit: int,
    window_ms: int,
    before: Mapping[str, int] | None = None,
) -> HistoryPage:
    """Merge per-origin runs (each the earliest messages after `after`) into one page. Pure.

    A later copy of a message id already on the page, or in `before` (the ids, with
    timestamps, of messages at or before `after`: earlier pages), within the dedup window
    (a publisher's retry in another region) is left out but still moves the cursor past it.
    """
    taken = merge_by_time(runs)[:limit]
    positions = dict(after.positions)
    seen: dict[str, int] = dict(before or {})
    entries = []
    for m in taken:
        if m.seq > positions.get(m.origin, 0):
            positions[m.origin] = m.seq
        key = m.dedup_key
        if key is not None:
            first = seen.get(key)
            if first is not None and abs(m.timestamp_ms - first) <= window_ms:
                continue
            seen[key] = m.timestamp_ms
        entries.append(HistoryEntry(m, encode_positions(channel, positions)))
    return HistoryPage(entries, encode_positions(channel, positions))


class History:
    def __init__(self, nc: Client, topology: Topology, region: str, settings: MeshSettings) -> None:
        self.regions = topology.names
        self.region = region
        self.settings = settings
        self.reader = DirectReader(nc, ReplyMux(nc), settings.request_timeout_s)

    async def page(self, channel: str, limit: int, after: str | None) -> HistoryPage:
        """Up to `limit` messages after `after` (None: from the oldest retained).

        Raises ChannelError, CursorError (also for a limit outside 1..max_history_limit)
        and MeshUnavailable.
        """
        token = channel_token(channel)
        top = self.settings.max_history_limit
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= top:
            raise CursorError(f"limit must be an integer from 1 to {top}")
        cursor = Cursor() if after is None else decode_cursor(channel, after, self.regions)
        window_ms = int(self.settings.duplicate_window_s * 1000)
        entries: list[HistoryEntry] = []
        before: dict[str, int] | None = None
        while True:
            want = limit - len(entries)
            runs = list(
                await asyncio.gather(
                    *(
                        self.reader.after(
                            stream_name(o), stored_subject(o, token), channel, cursor.get(o), want
                        )
                        for o in self.regions
                    )
                )
            )
            taken = merge_by_time(runs)[:want]
            if before is None:
                # Ids on earlier pages (at or before `after`) within the window of this
                # page's: a copy of one of them (a retry in another region) is left out.
                before, _ = await keys_behind(
                    self.reader,
                    self.regions,
                    token,
                    channel,
                    cursor,
                    taken,
                    window_ms,
                    self.settings.dedup_lookbehind,
                )
            page = build_page(channel, cursor, runs, want, window_ms, before)
            entries += page.entries
            if len(taken) < want or len(page.entries) == want:
                return HistoryPage(entries, page.cursor)
            # Copies were left out: fill the page from past them, so that a page is short
            # (or empty) only at the end of the history.
            before.update(dedup_keys(taken))
            cursor = decode_cursor(channel, page.cursor, self.regions)


@dataclass(frozen=True)
class MirrorStatus:
    origin: str
    stream: str
    active_s: float | None  # time since the mirror last heard from its origin; None: unknown
    lag: int  # messages the mirror knows it is behind
    last_seq: int
    stale: bool  # lost contact with the origin (or cannot be read)


def mirror_status(
    origin: str,
    stream: str,
    active_ns: int | None,
    lag: int,
    last_seq: int,
    stale_after_s: float,
) -> MirrorStatus:
    """Judge one mirror from its stream info. Pure.

    A mirror shows no error when its origin is gone; only ``active`` grows (measured: a
    live mirror stays under ~1 s). Stale means ``active`` beyond `stale_after_s`.
    """
    active_s = None if active_ns is None or active_ns < 0 else active_ns / 1e9
    stale = active_s is None or active_s > stale_after_s
    return MirrorStatus(origin, stream, active_s, lag, last_seq, stale)


class MirrorWatch:
    """Polls this region's mirrors: data for ``/readyz`` detail and metrics."""

    def __init__(
        self,
        js: JetStreamContext,
        topology: Topology,
        region: str,
        settings: MeshSettings,
        interval_s: float = 2.0,
    ) -> None:
        self.js = js
        self.region = region
        self.origins = [r for r in topology.names if r != region]
        self.settings = settings
        self.interval_s = interval_s
        self._statuses: list[MirrorStatus] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def statuses(self) -> list[MirrorStatus]:
        return list(self._statuses)

    def stale_origins(self) -> list[str]:
        return [s.origin for s in self._statuses if s.stale]

    async def poll(self) -> list[MirrorStatus]:
        out = []
        for origin in self.origins:
            name = mirror_name(origin, self.region)
            try:
                info = await self.js.stream_info(name)
                src = info.mirror
                out.append(
                    mirror_status(
                        origin,
                        name,
                        src.active if src is not None else None,
                        (src.lag or 0) if src is not None else 0,
                        info.state.last_seq,
                        self.settings.mirror_stale_after_s,
                    )
                )
            except (nats.errors.Error, APIError, TimeoutError, OSError) as exc:
                log.debug("mirror %s unreadable: %s", name, exc)
                out.append(MirrorStatus(origin, name, None, 0, 0, True))
        self._statuses = out
        return out

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mirror-watch")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.poll()
            await asyncio.sleep(self.interval_s)

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Stop polling; gives up on the poller (logged) after `timeout_s`."""
        if self._task is not None:
            if await cancel_and_wait([self._task], timeout_s):
                log.warning("mirror watch did not stop within %s s", timeout_s)
            self._task = None
