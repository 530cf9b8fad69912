"""The channel hub against a real 3-region supercluster: live delivery, the
subscribe-then-publish race, isolation, dedup, gap repair, resume and NATS restarts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from nats.aio.client import Client

from mesh.cursor import FromCursor, Live, Rewind, decode_cursor
from mesh.errors import ChannelError, CursorError
from mesh.hub import ChannelHub, Subscribed
from mesh.hub import Sink as HubSink
from mesh.message import StoredMessage
from mesh.natsconn import connect_region
from mesh.publisher import Publication, Publisher
from mesh.settings import MeshSettings
from mesh.streams import ensure_streams
from mesh.supercluster import Supercluster

SETTINGS = MeshSettings()


def encode(m: StoredMessage, cursor: str) -> bytes:
    return json.dumps(
        {"serial": m.serial, "id": m.id, "cursor": cursor, "data": m.data.decode()}
    ).encode()


@dataclass(eq=False)
class Sink:
    frames: list[dict[str, str]] = field(default_factory=list)
    subscribed: list[Subscribed] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def send_frame(self, frame: bytes) -> None:
        self.frames.append(json.loads(frame))
        self.changed.set()

    def on_subscribed(self, s: Subscribed) -> None:
        assert not self.frames, "subscribed must come before any live frame"
        self.subscribed.append(s)
        self.frames.extend(json.loads(f) for f in s.replay_frames)

    async def wait(self, count: int, within: float = 30.0) -> list[dict[str, str]]:
        deadline = time.monotonic() + within
        while len(self.frames) < count:
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"got {len(self.frames)} of {count} frames")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                continue
        return self.frames

    def serials(self) -> list[str]:
        return [f["serial"] for f in self.frames]

    async def until_data(self, value: object, within: float = 30.0) -> list[dict[str, str]]:
        """Frames up to and including the first whose data is `value` (a sentinel
        published after the others on the same route: what came before it has come)."""
        deadline = time.monotonic() + within
        while True:
            for i, f in enumerate(self.frames):
                if json.loads(f["data"]) == value:
                    return self.frames[: i + 1]
            left = deadline - time.monotonic()
            assert left > 0, f"no frame with data {value!r} in {self.frames}"
            await self.wait(len(self.frames) + 1, within=left)


@dataclass
class Region:
    nc: Client
    hub: ChannelHub
    publisher: Publisher


@pytest.fixture(scope="module")
async def mesh(supercluster: Supercluster) -> AsyncIterator[dict[str, Region]]:
    topo, secrets = supercluster.topology, supercluster.secrets
    out: dict[str, Region] = {}
    try:
        for r in topo.names:
            hub_box: list[ChannelHub] = []

            async def on_error(exc: Exception, box: list[ChannelHub] = hub_box) -> None:
                if box:
                    box[0].note_error(exc)

            async def on_reconnect(box: list[ChannelHub] = hub_box) -> None:
                if box:
                    await box[0].resync()

            nc = await connect_region(
                topo, secrets, r, "edge", f"hub-{r}", error_cb=on_error, reconnected_cb=on_reconnect
            )
            js = nc.jetstream(timeout=10)
            await ensure_streams(js, topo, r, SETTINGS)
            hub = ChannelHub(nc, js, topo, r, SETTINGS, encode)
            hub_box.append(hub)
            out[r] = Region(nc, hub, Publisher(nc, r, SETTINGS))
        yield out
    finally:
        for reg in out.values():
            await reg.hub.close()
            await reg.publisher.close()
            await reg.nc.close()


async def publish(reg: Region, channel: str, n: int, **kw: str) -> list[str]:
    futs = [reg.publisher.submit(Publication(channel, f'"{i}"'.encode(), **kw)) for i in range(n)]
    return [a.serial for a in await asyncio.gather(*futs)]


def per_origin(serials: list[str], origin: str) -> list[int]:
    return [int(s.split(":")[1]) for s in serials if s.startswith(origin + ":")]


async def test_live_delivery_from_every_region_in_order(mesh: dict[str, Region]) -> None:
    sink = Sink()
    await mesh["us"].hub.subscribe("room", sink, Live(), sink.on_subscribed)
    assert sink.subscribed[0].recovered is None
    eu, ap = await asyncio.gather(
        publish(mesh["eu"], "room", 300), publish(mesh["ap"], "room", 300)
    )
    frames = await sink.wait(600)
    got = sink.serials()
    assert len(got) == len(set(got)) == 600
    assert per_origin(got, "eu") == per_origin(eu, "eu")
    assert per_origin(got, "ap") == per_origin(ap, "ap")
    last = decode_cursor("room", frames[-1]["cursor"], ("eu", "us", "ap"))
    assert last.get("eu") == per_origin(eu, "eu")[-1] and last.get("ap") == per_origin(ap, "ap")[-1]
    # What the hub knows of each origin on the channel (what publish lookups consult).
    hub = mesh["us"].hub
    assert hub.live_position("room", "eu") == per_origin(eu, "eu")[-1]
    assert hub.live_position("room", "ap") == per_origin(ap, "ap")[-1]
    await hub.unsubscribe("room", sink)
    assert "room" not in hub._channels
    assert hub.live_position("room", "eu") is None  # no longer followed


async def test_subscribe_then_publish_at_once_loses_nothing(mesh: dict[str, Region]) -> None:
    """200 trials: subscribe in us on a new channel, publish in eu right away."""
    hub = mesh["us"].hub
    repaired_before = hub.counters.gaps_repaired

    async def trial(i: int) -> None:
        sink = Sink()
        channel = f"race-{i}-{time.monotonic_ns()}"
        await hub.subscribe(channel, sink, Live(), sink.on_subscribed)
        serial = (await publish(mesh["eu"], channel, 1))[0]
        assert (await sink.wait(1, within=30))[0]["serial"] == serial
        await hub.unsubscribe(channel, sink)

    for batch in range(10):
        await asyncio.gather(*(trial(batch * 20 + i) for i in range(20)))
    print(f"race: {hub.counters.gaps_repaired - repaired_before} of 200 came by repair")


async def test_tricky_channel_names_are_isolated(mesh: dict[str, Region]) -> None:
    names = [">", "*", "a.b", "a..b", "日本", "a", "b", "x" * 255, "é" * 127 + "x"]
    sinks = {n: Sink() for n in names}
    for n, s in sinks.items():
        await mesh["us"].hub.subscribe(n, s, Live(), s.on_subscribed)
    for n in names:
        await mesh["eu"].publisher.submit(Publication(n, json.dumps(n).encode()))
    # Then a sentinel per channel, from the same region: cross-talk (another channel's
    # message reaching a sink) would have come before the sink's own sentinel.
    for n in names:
        await mesh["eu"].publisher.submit(Publication(n, json.dumps(["end", n]).encode()))
    for n, s in sinks.items():
        got = await s.until_data(["end", n])
        assert [json.loads(f["data"]) for f in got] == [n, ["end", n]]
        assert len(s.frames) == 2, s.frames
        await mesh["us"].hub.unsubscribe(n, s)
    with pytest.raises(ChannelError):
        await mesh["us"].hub.subscribe("a b", Sink(), Live(), lambda s: None)


async def test_retry_in_another_region_is_delivered_once(mesh: dict[str, Region]) -> None:
    sink = Sink()
    hub = mesh["ap"].hub
    await hub.subscribe("failover", sink, Live(), sink.on_subscribed)
    dropped = hub.counters.duplicates_dropped
    await publish(mesh["eu"], "failover", 1, message_id="order-1", scope="key1")
    await publish(mesh["us"], "failover", 1, message_id="order-1", scope="key1")  # the retry
    await publish(mesh["us"], "failover", 1, message_id="order-1", scope="key2")  # other tenant
    await publish(mesh["us"], "failover", 1, message_id="order-2", scope="key1")
    await sink.wait(3)
    for _ in range(500):  # the duplicate may still be on its way
        if hub.counters.duplicates_dropped > dropped:
            break
        await asyncio.sleep(0.02)
    assert hub.counters.duplicates_dropped == dropped + 1
    assert [f["id"] for f in sink.frames] == ["order-1", "order-1", "order-2"]
    assert [f["serial"][:2] for f in sink.frames] == ["eu", "us", "us"]
    await hub.unsubscribe("failover", sink)


async def test_slow_consumer_drops_are_repaired(
    supercluster: Supercluster, mesh: dict[str, Region]
) -> None:
    """A hub whose subscription buffer overflows (nats-py drops) still delivers everything."""
    topo = supercluster.topology
    box: list[ChannelHub] = []

    async def on_error(exc: Exception) -> None:
        box[0].note_error(exc)

    nc = await connect_region(topo, supercluster.secrets, "us", "edge", "slow", error_cb=on_error)
    try:
        settings = MeshSettings(pending_msgs_limit=8)

        def slow_encode(m: StoredMessage, cursor: str) -> bytes:
            time.sleep(0.002)  # a slow encoder: the NATS subscription overflows
            return encode(m, cursor)

        hub = ChannelHub(nc, nc.jetstream(), topo, "us", settings, slow_encode)
        box.append(hub)
        sink = Sink()
        await hub.subscribe("firehose", sink, Live(), sink.on_subscribed)
        sent = await publish(mesh["eu"], "firehose", 400)
        # A sentinel after the 400: once it is in, any duplicate would have come too.
        end = await mesh["eu"].publisher.submit(Publication("firehose", b'"end"'))
        await sink.until_data("end", within=60)
        assert sink.serials() == [*sent, end.serial]
        assert hub.counters.slow_consumer_drops > 0 and hub.counters.gaps_repaired > 0
        await hub.close()
    finally:
        await nc.close()


class SinksFanout:
    """A Fanout that hands each frame to the sinks themselves, and can drop one of them
    from inside write() (as the edge does when a connection goes over its limit)."""

    def __init__(self) -> None:
        self.hub: ChannelHub | None = None
        self.drop_after: Sink | None = None
        self.writes = 0
        self.prepares = 0

    def prepare(self, sinks: tuple[HubSink, ...]) -> tuple[HubSink, ...]:
        self.prepares += 1
        return sinks

    def write(self, frame: bytes, sinks: tuple[HubSink, ...]) -> None:
        self.writes += 1
        for sink in sinks:
            sink.send_frame(frame)
            if sink is self.drop_after:
                assert self.hub is not None
                self.drop_after = None
                self.hub.drop_sink(sink)


async def test_fanout_never_reaches_a_dropped_sink(
    supercluster: Supercluster, mesh: dict[str, Region]
) -> None:
    """With a Fanout, a sink dropped while it is told it is subscribed, or from inside
    the fan-out, gets nothing more; the others get everything. The hub prepares the
    fan-out at the first message after its sinks changed, not at each change."""
    topo = supercluster.topology
    nc = await connect_region(topo, supercluster.secrets, "us", "edge", "fanout")
    try:
        fanout = SinksFanout()
        hub = ChannelHub(nc, nc.jetstream(), topo, "us", SETTINGS, encode, fanout=fanout)
        fanout.hub = hub
        gone, cut, stays = Sink(), Sink(), Sink()

        def told_then_dropped(s: Subscribed) -> None:
            gone.on_subscribed(s)
            hub.drop_sink(gone)  # a connection cut as it gets its `subscribed`

        await hub.subscribe("fan", gone, Live(), told_then_dropped)
        await hub.subscribe("fan", cut, Live(), cut.on_subscribed)
        await hub.subscribe("fan", stays, Live(), stays.on_subscribed)
        fanout.drop_after = cut
        sent = await publish(mesh["eu"], "fan", 3)
        await stays.wait(3)
        assert stays.serials() == sent
        assert cut.serials() == sent[:1]
        assert gone.frames == [] and len(gone.subscribed) == 1
        assert fanout.writes == 3
        assert fanout.prepares == 2  # at the first message, and after `cut` left
        assert hub.subscription_count() == 1
        await hub.close()
    finally:
        await nc.close()


async def test_resume_from_cursor_and_rewind(mesh: dict[str, Region]) -> None:
    hub = mesh["us"].hub
    first = Sink()
    await hub.subscribe("resume", first, Live(), first.on_subscribed)
    await publish(mesh["eu"], "resume", 20)
    await first.wait(20)
    cursor = first.frames[9]["cursor"]
    later = await publish(mesh["ap"], "resume", 5)
    await first.wait(25)
    # Resume after the 10th message: the other 15, then live.
    again = Sink()
    await hub.subscribe("resume", again, FromCursor(cursor), again.on_subscribed)
    assert again.subscribed[0].recovered is True
    assert again.serials() == first.serials()[10:]
    assert again.subscribed[0].cursor == first.frames[-1]["cursor"]
    more = await publish(mesh["eu"], "resume", 3)
    await again.wait(18)
    assert again.serials()[-3:] == more
    # Rewind 4: the last four messages, then live.
    rew = Sink()
    await hub.subscribe("resume", rew, Rewind(4), rew.on_subscribed)
    await first.wait(28)
    assert rew.serials() == first.serials()[-4:]
    assert rew.subscribed[0].recovered is True and len(rew.frames) == 4
    assert rew.serials()[-3:] == more and later[-1] in first.serials()
    # A cursor from another channel or with an unknown region is refused.
    with pytest.raises(CursorError):
        await hub.subscribe("other", Sink(), FromCursor(cursor), lambda s: None)
    with pytest.raises(CursorError):
        await hub.subscribe("resume", Sink(), Rewind(-1), lambda s: None)
    for s in (first, again, rew):
        hub.drop_sink(s)


async def test_resume_over_removed_messages_is_not_recovered(mesh: dict[str, Region]) -> None:
    """When the cursor's own message is gone, retention (oldest first) may have removed
    what followed it: recovered is false, and what remains is still sent."""
    us = mesh["us"]
    first = Sink()
    await us.hub.subscribe("holes", first, Live(), first.on_subscribed)
    serials = await publish(us, "holes", 6)
    await first.wait(6)
    cursor = first.frames[1]["cursor"]  # after the 2nd message
    await us.hub.unsubscribe("holes", first)
    js = us.nc.jetstream(timeout=5)
    for serial in serials[:3]:  # removed oldest first, as retention does
        await js.delete_msg("EM_us", int(serial.split(":")[1]))
    again = Sink()
    await us.hub.subscribe("holes", again, FromCursor(cursor), again.on_subscribed)
    assert again.subscribed[0].recovered is False
    assert again.serials() == serials[3:]
    # A cursor at a message still held: what follows is complete.
    held = Sink()
    await us.hub.subscribe("holes", held, FromCursor(first.frames[3]["cursor"]), held.on_subscribed)
    assert held.subscribed[0].recovered is True and held.serials() == serials[4:]
    us.hub.drop_sink(held)
    # A cursor at the newest message: nothing to replay, nothing missing.
    latest = Sink()
    await us.hub.subscribe(
        "holes", latest, FromCursor(again.subscribed[0].cursor), latest.on_subscribed
    )
    assert latest.subscribed[0].recovered is True and latest.frames == []
    for s in (again, latest):
        us.hub.drop_sink(s)


async def test_hub_survives_its_nats_server_restarting(
    supercluster: Supercluster, mesh: dict[str, Region]
) -> None:
    """Runs last: restarts us-n1 under the us hub, while eu keeps publishing."""
    us = mesh["us"]
    sink = Sink()
    await us.hub.subscribe("restart", sink, Live(), sink.on_subscribed)
    before = await publish(mesh["eu"], "restart", 10)
    await sink.wait(10)
    resyncs = us.hub.counters.resyncs
    supercluster.kill_server("us-n1")
    during = await publish(mesh["eu"], "restart", 10)  # us is down: the hub misses these
    supercluster.start_server("us-n1")
    supercluster.wait_formed(60)
    for _ in range(600):
        if us.hub.counters.resyncs > resyncs:
            break
        await asyncio.sleep(0.05)
    assert us.hub.counters.resyncs > resyncs, "the hub did not reconnect"
    # The resync alone (no later message revealing the gap) brings the missed ones.
    await sink.wait(20, within=60)
    assert sink.serials() == before + during
    after = await publish(mesh["eu"], "restart", 10)
    await sink.wait(30, within=60)
    assert sink.serials() == before + during + after
