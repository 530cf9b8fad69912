"""Live delivery of channel messages to an edge's local subscribers, with no gap and no
duplicate.

One hub per edge process. A channel with local subscribers has one NATS subscription
(``em.live.*.<token>``); its messages are handled in order by that subscription's
callback under the channel's lock, which also serializes subscribes (replay + join) with
live delivery. Every message is encoded once, by the edge's encoder, and the same bytes
are handed to every local sink: by the edge's :class:`Fanout` when it gives one (one call
per message for all of a channel's sinks), else by each sink's ``send_frame``.

Per (channel, origin) the :class:`~mesh.recovery.ChannelLedger` knows the last delivered
sequence. A message whose ``Nats-Last-Sequence`` is beyond it reveals a gap, repaired
from the local copy (origin stream or mirror) before that message is delivered. Sweeps
shortly after a channel is first subscribed close the subscribe-then-publish race across
gateways; :meth:`ChannelHub.resync` (after a NATS reconnect) and nats-py slow-consumer
drops trigger the same sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Collection, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext

from mesh.cancellation import cancel_and_wait
from mesh.channels import channel_token
from mesh.cursor import (
    Cursor,
    FromCursor,
    Live,
    Rewind,
    Start,
    decode_cursor,
    encode_positions,
)
from mesh.errors import CursorError, MeshUnavailable
from mesh.message import MessageFormatError, StoredMessage, decode_stored
from mesh.recovery import (
    ChannelLedger,
    Gap,
    Verdict,
)
from mesh.replay import ChannelStore, Replay, keys_before
from mesh.settings import MeshSettings
from mesh.subjects import (
    live_wildcard,
    split_stored_subject,
)
from mesh.topology import Topology

log = logging.getLogger(__name__)

Encoder = Callable[[StoredMessage, str], bytes]


class Sink(Protocol):
    """A local subscriber (one connection). Hashed by identity."""

    def send_frame(self, frame: bytes) -> None: ...


class Fanout(Protocol):
    """The edge's bulk writer: one frame to all of a channel's sinks in one call.

    The hot path of delivery costs a write per sink, and every Python object touched
    per sink costs too (mostly cache misses, at 50 ms between messages). So the hub
    asks :meth:`prepare` for what :meth:`write` needs to reach a channel's sinks
    (e.g. their sockets' fds) at the first message after the channel's sinks changed
    or one of them changed how it is reached (:meth:`ChannelHub.sink_changed`), and
    calls :meth:`write` once per message. A sink the hub delivers to must take every frame
    that ``write`` is given for it: a sink that must not get more leaves the hub
    (:meth:`ChannelHub.drop_sink`, safe to call from inside ``write``). ``write``
    must not let one sink's failure starve the others.
    """

    def prepare(self, sinks: tuple[Sink, ...]) -> Any: ...

    def write(self, frame: bytes, prepared: Any) -> None: ...


@dataclass(frozen=True)
class Subscribed:
    cursor: str
    recovered: bool | None
    replay_frames: list[bytes]


@dataclass
class HubCounters:
    messages_in: int = 0
    messages_out: int = 0
    gaps_repaired: int = 0
    gaps_unrepaired: int = 0
    duplicates_dropped: int = 0
    slow_consumer_drops: int = 0
    resyncs: int = 0
    sweeps: int = 0
    lookbehind_capped: int = 0  # look-behinds for dedup keys that hit dedup_lookbehind


class _Channel:
    __slots__ = (
        "closed",
        "fanout",
        "floors",
        "ledger",
        "lock",
        "name",
        "prepared",
        "sinks",
        "stale",
        "sub",
        "token",
    )

    def __init__(self, name: str, token: str) -> None:
        self.name = name
        self.token = token
        self.lock = asyncio.Lock()
        self.ledger: ChannelLedger | None = None
        self.sinks: set[Sink] = set()
        # The sinks as delivered to, rebuilt from `sinks` at the first delivery after they
        # changed (`stale`): a burst of subscribes costs one rebuild, not one each.
        self.fanout: tuple[Sink, ...] = ()
        self.prepared: Any = None  # Fanout.prepare(fanout), when the hub has a Fanout
        self.stale = False
        # Sinks that resumed ahead of this hub's live point: per origin, the seq they have.
        self.floors: dict[Sink, dict[str, int]] = {}
        self.sub: Subscription | None = None
        self.closed = False


class ChannelHub:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        topology: Topology,
        region: str,
        settings: MeshSettings,
        encoder: Encoder,
        on_delivery_lag: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
        fanout: Fanout | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.topology = topology
        self.region = region
        self.regions = topology.names
        self.settings = settings
        self.encoder = encoder
        self.fanout = fanout
        self.on_delivery_lag = on_delivery_lag
        self.clock = clock
        self.store = ChannelStore(nc, region, self.regions, settings)
        self.counters = HubCounters()
        self._channels: dict[str, _Channel] = {}
        self._by_token: dict[str, _Channel] = {}
        self._sink_channels: dict[Sink, set[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._window_ms = int(settings.duplicate_window_s * 1000)

    # ----------------------------------------------------------------- public API

    def channel_count(self) -> int:
        return len(self._channels)

    def subscription_count(self) -> int:
        return sum(len(ch.sinks) for ch in self._channels.values())

    def live_position(self, channel: str, origin: str) -> int | None:
        """The last sequence of `origin` on `channel` this hub knows of (delivered, or the
        live point it opened at), or None when it does not follow the channel (no local
        subscriber) or has no baseline for that origin."""
        ch = self._channels.get(channel)
        if ch is None or ch.closed or ch.ledger is None:
            return None
        return ch.ledger.delivered.get(origin)

    async def subscribe(
        self,
        channel: str,
        sink: Sink,
        start: Start,
        on_subscribed: Callable[[Subscribed], None],
    ) -> None:
        """Subscribe `sink` to `channel` from `start`.

        `on_subscribed` is called once, synchronously, before any live frame of the
        channel reaches `sink`; live frames then follow with no gap and no duplicate.
        Raises ChannelError, CursorError or MeshUnavailable (and then sink is not
        subscribed).
        """
        token = channel_token(channel)
        cursor: Cursor | None = None
        if isinstance(start, FromCursor):
            cursor = decode_cursor(channel, start.cursor, self.regions)
        elif isinstance(start, Rewind) and not 0 <= start.count <= self.settings.max_rewind:
            raise CursorError(f"rewind must be 0-{self.settings.max_rewind}")
        while True:
            ch = self._channels.get(channel)
            new = ch is None
            if ch is None:
                ch = _Channel(channel, token)
                self._channels[channel] = ch
                self._by_token[token] = ch
            async with ch.lock:
                if ch.closed:
                    continue
                try:
                    if new:
                        await self._open(ch)
                    await self._join(ch, sink, start, cursor, on_subscribed)
                except BaseException:
                    if not ch.sinks:
                        await self._close_channel(ch)
                    raise
            if new:
                self._spawn(self._sweeps(ch), f"sweep {channel}")
            return

    async def unsubscribe(self, channel: str, sink: Sink) -> None:
        """Stop delivering `channel` to `sink` (no-op when it is not subscribed)."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        self._remove(ch, sink)
        if not ch.sinks:
            async with ch.lock:
                if not ch.sinks and not ch.closed:
                    await self._close_channel(ch)

    def drop_sink(self, sink: Sink) -> None:
        """The connection is gone: remove `sink` from every channel at once."""
        for name in list(self._sink_channels.get(sink, ())):
            ch = self._channels.get(name)
            if ch is None:
                continue
            self._remove(ch, sink)
            if not ch.sinks:
                self._spawn(self.unsubscribe(name, sink), f"close {name}")
        self._sink_channels.pop(sink, None)

    def sink_changed(self, sink: Sink) -> None:
        """How `sink` is reached changed: each of its channels asks the Fanout to
        prepare again before its next frame (safe to call from inside ``write``)."""
        for name in self._sink_channels.get(sink, ()):
            ch = self._channels.get(name)
            if ch is not None:
                ch.stale = True

    async def resync(self) -> None:
        """Repair every channel (after a NATS reconnect: messages may have been missed)."""
        self.counters.resyncs += 1
        # Ask each remote origin once whether it answers: sweeps skip the dead ones
        # instead of waiting for a timeout per channel.
        remote = [o for o in self.regions if o != self.region]
        probes = await asyncio.gather(*(self.store.origin_answers(o) for o in remote))
        dead = {o for o, ok in zip(remote, probes, strict=True) if not ok}
        limit = asyncio.Semaphore(self.settings.resync_concurrency)

        async def sweep(ch: _Channel) -> None:
            async with limit:
                await self._sweep(ch, dead)

        await asyncio.gather(*(sweep(ch) for ch in list(self._channels.values())))

    def note_error(self, exc: BaseException) -> None:
        """Feed nats-py's error callback here: a slow-consumer drop becomes a sweep."""
        if isinstance(exc, nats.errors.SlowConsumerError):
            self.counters.slow_consumer_drops += 1
            parts = split_stored_subject(exc.subject or "")
            ch = self._by_token.get(parts[1]) if parts else None
            if ch is not None:
                self._spawn(self._sweep(ch), f"sweep {ch.name}")

    async def close(self, timeout_s: float = 2.0) -> None:
        if await cancel_and_wait(self._tasks, timeout_s):
            log.warning("hub tasks did not stop within %s s", timeout_s)
        for ch in list(self._channels.values()):
            await self._close_channel(ch)

    # ------------------------------------------------------------ channel lifecycle

    async def _open(self, ch: _Channel) -> None:
        """Subscribe live, then take each origin's last stored seq as the live point."""
        try:
            ch.sub = await self.nc.subscribe(
                live_wildcard(ch.token),
                cb=functools.partial(self._on_live, ch),
                pending_msgs_limit=self.settings.pending_msgs_limit,
            )
            await self.nc.flush(timeout=max(1, round(self.settings.request_timeout_s)))
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise MeshUnavailable(f"cannot subscribe: {exc}") from None
        # An origin whose copy does not answer (None) is learnt from its first live message.
        baseline = await self.store.baseline(ch.name, ch.token)
        ledger = ChannelLedger(baseline, self._window_ms, self.settings.dedup_memory)
        # Ids stored within the dedup window before the live point: a copy of one of them
        # arriving live (a publisher's retry in another region) is not delivered again.
        keys, capped = await keys_before(
            self.store.local,
            self.regions,
            ch.token,
            ch.name,
            Cursor({o: s for o, s in baseline.items() if s}),
            int(self.clock() * 1000) - self._window_ms,
            self.settings.dedup_lookbehind,
        )
        self.counters.lookbehind_capped += capped
        ledger.seed(keys)
        ch.ledger = ledger

    async def _close_channel(self, ch: _Channel) -> None:
        ch.closed = True
        if self._channels.get(ch.name) is ch:
            del self._channels[ch.name]
            self._by_token.pop(ch.token, None)
        if ch.sub is not None:
            sub, ch.sub = ch.sub, None
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    def _remove(self, ch: _Channel, sink: Sink) -> None:
        if sink in ch.sinks:
            ch.sinks.discard(sink)
            ch.floors.pop(sink, None)
            ch.stale = True
        names = self._sink_channels.get(sink)
        if names is not None:
            names.discard(ch.name)
            if not names:
                del self._sink_channels[sink]

    def _rebuild_fanout(self, ch: _Channel) -> None:
        ch.stale = False
        ch.fanout = tuple(ch.sinks)
        ch.prepared = self.fanout.prepare(ch.fanout) if self.fanout is not None else None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------- live path

    async def _on_live(self, ch: _Channel, msg: Msg) -> None:
        self.counters.messages_in += 1
        try:
            m = decode_stored(msg.headers, msg.data, ch.name)
        except MessageFormatError as exc:
            log.warning("channel %r: dropped an unreadable live message: %s", ch.name, exc)
            return
        if m.origin not in self.regions:
            return
        async with ch.lock:
            if ch.closed or ch.ledger is None:
                return
            led = ch.ledger
            verdict = led.classify(m)
            if verdict is Verdict.OLD:
                return
            if verdict is Verdict.GAP:
                await self._repair(ch, led.gap(m))
            self._offer(ch, m)

    def _offer(self, ch: _Channel, m: StoredMessage) -> None:
        assert ch.ledger is not None
        led = ch.ledger
        before = led.duplicates
        if led.accept(m):
            self._deliver(ch, m)
        else:
            self.counters.duplicates_dropped += led.duplicates - before

    def _deliver(self, ch: _Channel, m: StoredMessage) -> None:
        assert ch.ledger is not None
        frame = self.encoder(m, encode_positions(ch.name, ch.ledger.positions()))
        if ch.stale:
            self._rebuild_fanout(ch)
        sinks = ch.fanout
        if ch.floors:
            sinks = self._past_floors(ch, m)
            self._send_each(ch, sinks, frame)
        elif ch.prepared is not None:
            assert self.fanout is not None
            try:
                self.fanout.write(frame, ch.prepared)
            except Exception:
                log.exception("channel %r: the fan-out failed", ch.name)
        else:
            self._send_each(ch, sinks, frame)
        self.counters.messages_out += len(sinks)
        if self.on_delivery_lag is not None:
            self.on_delivery_lag(max(0.0, self.clock() - m.timestamp_ms / 1000))

    def _send_each(self, ch: _Channel, sinks: tuple[Sink, ...], frame: bytes) -> None:
        for sink in sinks:
            try:
                sink.send_frame(frame)
            except Exception:  # one broken sink must not starve the others
                log.exception("channel %r: a sink failed", ch.name)

    def _past_floors(self, ch: _Channel, m: StoredMessage) -> tuple[Sink, ...]:
        assert ch.ledger is not None
        out = []
        for sink in ch.fanout:
            floor = ch.floors.get(sink)
            if floor is not None and m.seq <= floor.get(m.origin, 0):
                continue
            out.append(sink)
        # Floors the channel has passed are no longer needed.
        pos = ch.ledger.positions()
        for sink, floor in list(ch.floors.items()):
            if all(pos.get(r, 0) >= s for r, s in floor.items()):
                del ch.floors[sink]
        return tuple(out)

    async def _repair(self, ch: _Channel, gap: Gap) -> None:
        """Deliver every stored message of the gap, in order, before what revealed it."""
        assert ch.ledger is not None
        after = ch.ledger.delivered.get(gap.origin) or gap.after
        if after >= gap.upto:
            return
        run = await self.store.fetch_range(
            ch.name, ch.token, gap.origin, after, gap.upto, lambda: ch.closed
        )
        for m in run:
            self.counters.gaps_repaired += 1
            self._offer(ch, m)
        if not run or run[-1].seq < gap.upto:
            self.counters.gaps_unrepaired += 1
            log.warning(
                "channel %r: messages of %s in (%d, %d] could not be fetched",
                ch.name,
                gap.origin,
                after,
                gap.upto,
            )

    async def _sweeps(self, ch: _Channel) -> None:
        began = time.monotonic()
        for delay in self.settings.sweep_delays_s:
            await asyncio.sleep(max(0.0, began + delay - time.monotonic()))
            if ch.closed:
                return
            await self._sweep(ch)

    async def _sweep(self, ch: _Channel, dead: Collection[str] = ()) -> None:
        """Compare each origin's newest stored message of the channel with what was
        delivered, and repair the difference. Origins in `dead` are read from the local
        copy only."""
        self.counters.sweeps += 1
        for origin in self.regions:
            newest = await self.store.newest(ch.name, ch.token, origin, origin not in dead)
            if newest is None:
                continue
            async with ch.lock:
                if ch.closed or ch.ledger is None:
                    return
                delivered = ch.ledger.delivered.get(origin)
                if delivered is not None and newest > delivered:
                    await self._repair(ch, Gap(origin, delivered, newest))

    # -------------------------------------------------------------------- joining

    async def _join(
        self,
        ch: _Channel,
        sink: Sink,
        start: Start,
        cursor: Cursor | None,
        on_subscribed: Callable[[Subscribed], None],
    ) -> None:
        assert ch.ledger is not None
        self._remove(ch, sink)
        live = Cursor(ch.ledger.positions())
        recovered: bool | None = None
        frames: list[bytes] = []
        floor: dict[str, int] = {}
        if isinstance(start, FromCursor):
            assert cursor is not None
            replay = await self.store.after_cursor(ch.name, ch.token, cursor, live)
            frames, recovered = self._encode_replay(ch, replay), replay.recovered
            self.counters.lookbehind_capped += replay.lookbehind_capped
            have = cursor.merged(replay.reach)
            floor = {r: s for r, s in have.positions.items() if s > live.get(r)}
            live = live.merged(have)
        elif isinstance(start, Rewind):
            replay = await self.store.last(ch.name, ch.token, start.count, live)
            frames, recovered = self._encode_replay(ch, replay), replay.recovered
        else:
            assert isinstance(start, Live)
        # Joined first, then told: a sink that leaves while it is told (a connection cut
        # as it gets its replay) is gone for good. Nothing is delivered in between.
        ch.sinks.add(sink)
        if floor:
            ch.floors[sink] = floor
        self._sink_channels.setdefault(sink, set()).add(ch.name)
        ch.stale = True
        try:
            on_subscribed(Subscribed(encode_positions(ch.name, live.positions), recovered, frames))
        except BaseException:
            self._remove(ch, sink)
            raise
        self.counters.messages_out += len(frames)

    def _encode_replay(self, ch: _Channel, replay: Replay) -> list[bytes]:
        positions = dict(replay.before.positions)
        frames = []
        for m in replay.messages:
            if m.seq > positions.get(m.origin, 0):
                positions[m.origin] = m.seq
            frames.append(self.encoder(m, encode_positions(ch.name, positions)))
        return frames
