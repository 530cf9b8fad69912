"""Streams, mirrors and the publisher against a real 3-region supercluster."""

from __future__ import annotations

import asyncio
import time

import pytest
from nats.aio.msg import Msg

from mesh.channels import channel_token
from mesh.directget import DirectReader
from mesh.errors import ChannelError, MeshUnavailable
from mesh.history import MirrorWatch
from mesh.message import StoredMessage, decode_stored
from mesh.publisher import Ack, Publication, Publisher, assign_message_id
from mesh.replies import ReplyMux
from mesh.settings import MeshSettings
from mesh.streams import (
    _differs,
    ensure_streams,
    mirror_stream_config,
    origin_stream_config,
)
from mesh.subjects import live_wildcard, mirror_name, stored_subject, stream_name
from mesh.supercluster import Supercluster
from tests.conftest import NatsClients

SETTINGS = MeshSettings(max_msgs_per_channel=5000)


@pytest.fixture(scope="module")
async def streams(supercluster: Supercluster) -> None:
    clients = NatsClients(supercluster)
    try:
        for region in supercluster.topology.names:
            nc = await clients(region)
            await ensure_streams(nc.jetstream(timeout=10), supercluster.topology, region, SETTINGS)
    finally:
        await clients.close()


async def test_ensure_streams_is_idempotent_and_concurrent(
    supercluster: Supercluster, streams: None, nats_client: NatsClients
) -> None:
    topo = supercluster.topology
    a, b = await nats_client("us"), await nats_client("us")
    await asyncio.gather(
        ensure_streams(a.jetstream(timeout=10), topo, "us", SETTINGS),
        ensure_streams(b.jetstream(timeout=10), topo, "us", SETTINGS),
    )
    js = a.jetstream(timeout=10)
    info = await js.stream_info(stream_name("us"))
    assert info.cluster is not None and info.cluster.name == "us"
    cfg = info.config
    assert cfg.allow_direct and cfg.duplicate_window == 120
    assert cfg.republish is not None and cfg.republish.dest == "em.live.us.>"
    assert cfg.max_msgs_per_subject == 5000
    for origin in ("eu", "ap"):
        m = await js.stream_info(mirror_name(origin, "us"))
        assert m.config.mirror is not None and m.config.mirror.name == stream_name(origin)
        assert m.config.mirror_direct and m.config.max_msgs_per_subject == 5000
        assert m.cluster is not None and m.cluster.name == "us"
    # What the server reports back matches what was asked: no restart-causing update
    # on the next start-up (a mirror update pauses its copying for seconds).
    for want in [origin_stream_config(topo, "us", SETTINGS)] + [
        mirror_stream_config(topo, o, "us", SETTINGS) for o in ("eu", "ap")
    ]:
        assert want.name is not None
        assert not _differs((await js.stream_info(want.name)).config, want), want.name
    # A changed retention setting is applied on the next start-up.
    changed = MeshSettings(max_msgs_per_channel=4000)
    await ensure_streams(js, topo, "us", changed)
    assert (await js.stream_info(stream_name("us"))).config.max_msgs_per_subject == 4000
    assert (await js.stream_info(mirror_name("eu", "us"))).config.max_msgs_per_subject == 4000
    await ensure_streams(js, topo, "us", SETTINGS)


async def test_ack_is_durable_and_live_copy_decodes(
    streams: None, nats_client: NatsClients
) -> None:
    eu, us = await nats_client("eu"), await nats_client("us")
    token = channel_token("chat:日本.x")
    live: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        live.put_nowait(msg)

    await us.subscribe(live_wildcard(token), cb=on_live)
    await us.flush()
    pub = Publisher(eu, "eu", SETTINGS)
    name = "say\r\nNats-Msg-Id: forged"
    ack = None
    # Interest crosses the gateway asynchronously: publish until a copy arrives.
    for _ in range(200):
        ack = await pub.submit(
            Publication("chat:日本.x", b'{"t":1}', name=name, client_id="álice", scope="k1")
        )
        try:
            msg = await asyncio.wait_for(live.get(), 0.05)
            break
        except TimeoutError:
            continue
    else:
        pytest.fail("no live copy after 200 publishes")
    assert ack is not None and ack.serial == f"eu:{ack.seq}" and not ack.duplicate
    while not live.empty() or msg.headers is None or msg.headers["Nats-Sequence"] != str(ack.seq):
        msg = await asyncio.wait_for(live.get(), 5)
    m = decode_stored(msg.headers, msg.data)
    assert (m.channel, m.origin, m.seq, m.serial) == ("chat:日本.x", "eu", ack.seq, ack.serial)
    assert m.name == name and m.client_id == "álice" and m.data == b'{"t":1}'
    assert m.id == ack.message_id and m.id.startswith("m-") and m.dedup_key is None
    assert abs(m.timestamp_ms - ack.timestamp_ms) < 5000
    await pub.close()


async def test_pipelined_publishes_keep_order(streams: None, nats_client: NatsClients) -> None:
    eu = await nats_client("eu")
    pub = Publisher(eu, "eu", SETTINGS)
    futs = [pub.submit(Publication("order", str(i).encode())) for i in range(2000)]
    acks = await asyncio.gather(*futs)
    seqs = [a.seq for a in acks]
    assert seqs == sorted(seqs) and len(set(seqs)) == 2000
    reader = DirectReader(eu, ReplyMux(eu), 5)
    subject = stored_subject("eu", channel_token("order"))
    stored = await reader.range(stream_name("eu"), subject, "order", 0, seqs[-1], 1000)
    assert [m.data for m in stored] == [str(i).encode() for i in range(2000)]
    # A batch reply's Nats-Last-Sequence is reply-relative, not the chain: not used.
    assert stored[1].last_seq is None
    await pub.close()


async def test_retry_is_duplicate_and_scopes_do_not_collide(
    streams: None, nats_client: NatsClients
) -> None:
    eu = await nats_client("eu")
    pub = Publisher(eu, "eu", SETTINGS)
    first = await pub.submit(Publication("dup", b"1", message_id="x:1", scope="tenant-a"))
    again = await pub.submit(Publication("dup", b"1", message_id="x:1", scope="tenant-a"))
    other = await pub.submit(Publication("dup", b"1", message_id="x:1", scope="tenant-b"))
    assert not first.duplicate and again.duplicate and again.seq == first.seq
    assert again.serial == first.serial and again.message_id == "x:1"
    assert not other.duplicate and other.seq != first.seq
    # the same id on another channel of the same region is another message, stored too
    elsewhere = await pub.submit(Publication("dup-2", b"2", message_id="x:1", scope="tenant-a"))
    assert not elsewhere.duplicate and elsewhere.seq not in (first.seq, other.seq)
    await pub.close()


async def test_unavailable_is_reported_never_a_hang(
    supercluster: Supercluster, streams: None, nats_client: NatsClients
) -> None:
    eu = await nats_client("eu")
    # No stream captures region "zz": the server answers "no responders" at once.
    nowhere = Publisher(eu, "zz", SETTINGS)
    with pytest.raises(MeshUnavailable) as exc:
        await asyncio.wait_for(nowhere.submit(Publication("c", b"1")), 5)
    assert exc.value.code == 50300
    # Something swallows the publish and never answers: the publish timeout fires. The
    # swallower subscribes on the publishing connection itself: its server then knows the
    # interest at once (another connection may sit on another server of the cluster, and
    # the interest would reach this one over a route only later: "no responders").
    await eu.subscribe("em.msg.quiet.>")
    await eu.flush()
    quiet = Publisher(eu, "quiet", MeshSettings(publish_timeout_s=0.3))
    t0 = time.monotonic()
    with pytest.raises(MeshUnavailable, match="acknowledge"):
        await asyncio.wait_for(quiet.submit(Publication("c", b"1")), 5)
    assert time.monotonic() - t0 >= 0.3
    # Connection lost with publishes in flight: the edge's disconnected callback fails
    # them at once instead of waiting for the timeout.
    stuck = quiet.submit(Publication("c", b"2"))
    await asyncio.sleep(0)  # let the writer send it
    assert quiet.in_flight == 1
    quiet.connection_lost()
    with pytest.raises(MeshUnavailable, match="lost"):
        await asyncio.wait_for(stuck, 1)
    assert quiet.in_flight == 0
    # Disconnected: refused at once, not queued.
    closed = await nats_client("eu")
    await closed.close()
    with pytest.raises(MeshUnavailable):
        await Publisher(closed, "eu", SETTINGS).submit(Publication("c", b"1"))
    with pytest.raises(ChannelError):
        nowhere.submit(Publication("a b", b"1"))
    await nowhere.close()
    await quiet.close()


async def test_mirrors_answer_direct_gets_for_the_origin(
    streams: None, nats_client: NatsClients
) -> None:
    ap = await nats_client("ap")
    pub = Publisher(ap, "ap", SETTINGS)
    acks = [await pub.submit(Publication("mirrored", str(i).encode())) for i in range(10)]
    us = await nats_client("us")
    js = us.jetstream(timeout=5)
    mirror = mirror_name("ap", "us")

    async def mirrored() -> int:
        return (await js.stream_info(mirror)).state.last_seq

    deadline = time.monotonic() + 20
    while await mirrored() < acks[-1].seq:
        assert time.monotonic() < deadline, "mirror did not catch up"
        await asyncio.sleep(0.05)
    reader = DirectReader(us, ReplyMux(us), 5)
    subject = stored_subject("ap", channel_token("mirrored"))
    got: list[StoredMessage] = await reader.after(stream_name("ap"), subject, "mirrored", 0, 100)
    assert [m.seq for m in got] == [a.seq for a in acks]
    last = await reader.last(stream_name("ap"), subject, "mirrored")
    assert last is not None and last.seq == acks[-1].seq
    assert [m.seq for m in await reader.last_n(stream_name("ap"), subject, "m", 3, 10**6, 2)] == [
        a.seq for a in acks[-3:]
    ]
    await pub.close()


def test_assigned_ids_are_time_ordered() -> None:
    a = assign_message_id(1000, b"\xff" * 10)
    b = assign_message_id(1001, b"\x00" * 10)
    assert len(a) == 28 and a < b


async def test_a_region_starting_first_creates_the_streams_its_mirrors_need(
    supercluster: Supercluster, streams: None, nats_client: NatsClients
) -> None:
    """A mirror made before its origin stream exists waits ~40 s to copy: us, starting
    first, creates ap's stream (in cluster ap) so its mirror of ap copies at once."""
    topo = supercluster.topology
    us = await nats_client("us")
    js = us.jetstream(timeout=10)
    for name in (mirror_name("ap", "us"), stream_name("ap")):
        await js.delete_stream(name)
    await ensure_streams(js, topo, "us", SETTINGS)
    info = await js.stream_info(stream_name("ap"))
    assert info.cluster is not None and info.cluster.name == "ap"
    assert not _differs(info.config, origin_stream_config(topo, "ap", SETTINGS))
    ap = await nats_client("ap")
    pub = Publisher(ap, "ap", SETTINGS)
    ack = await pub.submit(Publication("early", b"1"))
    for _ in range(400):  # 20 s: well under the ~40 s of a mirror made too early
        if (await js.stream_info(mirror_name("ap", "us"))).state.last_seq >= ack.seq:
            break
        await asyncio.sleep(0.05)
    assert (await js.stream_info(mirror_name("ap", "us"))).state.last_seq >= ack.seq
    await pub.close()


async def test_each_publication_expires_at_its_own_deadline(
    streams: None, nats_client: NatsClients
) -> None:
    """One timer watches every deadline: publications submitted 0.2 s apart each fail
    at their own timeout, neither sooner nor a timeout later, and one answered in
    between is acked, not failed."""
    nc = await nats_client("eu")

    async def swallow(msg: Msg) -> None:  # answers only the publication saying "answer"
        if msg.data == b'"answer"':
            await nc.publish(msg.reply, b'{"stream":"EM_slow","seq":7}')

    await nc.subscribe("em.msg.slow.>", cb=swallow)
    await nc.flush()
    timeout = 0.6
    pub = Publisher(nc, "slow", MeshSettings(publish_timeout_s=timeout))
    submitted: list[tuple[float, asyncio.Future[Ack]]] = []
    ended: dict[int, float] = {}
    for i, data in enumerate((b"1", b'"answer"', b"2", b"3")):
        fut = pub.submit(Publication("c", data))
        fut.add_done_callback(lambda _f, i=i: ended.setdefault(i, time.monotonic()))
        submitted.append((time.monotonic(), fut))
        await asyncio.sleep(0.2)  # the scenario: submissions spread over the timeout
    assert (await asyncio.wait_for(submitted[1][1], 5)).seq == 7
    for i in (0, 2, 3):
        at, fut = submitted[i]
        with pytest.raises(MeshUnavailable, match="acknowledge"):
            await asyncio.wait_for(fut, 5)
        assert timeout <= ended[i] - at < timeout + 0.3
    assert pub.in_flight == 0
    await pub.close()


def test_message_ids_stay_distinct_across_entropy_blocks() -> None:
    """Assigned ids draw 10 random bytes each from blocks of OS randomness."""
    from mesh.publisher import _Entropy

    entropy = _Entropy()
    draws = [entropy.take(10) for _ in range(3 * _Entropy.BLOCK // 10)]  # three blocks
    assert all(len(d) == 10 for d in draws) and len(set(draws)) == len(draws)
    ids = {assign_message_id(1_764_400_000_000, d) for d in draws}
    assert len(ids) == len(draws)


async def test_republished_copies_chain_the_channel_sequences(
    streams: None, nats_client: NatsClients
) -> None:
    """The fact gap detection rests on: a live copy's Nats-Last-Sequence is the previous
    stored seq of the SAME channel (0 for its first), skipping other channels."""
    eu = await nats_client("eu")
    live: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        live.put_nowait(msg)

    await eu.subscribe(live_wildcard(channel_token("chain")), cb=on_live)
    await eu.flush()
    pub = Publisher(eu, "eu", SETTINGS)
    a = await pub.submit(Publication("chain", b"1"))
    await pub.submit(Publication("not-chain", b"2"))
    b = await pub.submit(Publication("chain", b"3"))
    first = decode_stored((await asyncio.wait_for(live.get(), 10)).headers, b"1")
    second = decode_stored((await asyncio.wait_for(live.get(), 10)).headers, b"3")
    assert (first.seq, first.last_seq) == (a.seq, 0)
    assert (second.seq, second.last_seq) == (b.seq, a.seq) and b.seq == a.seq + 2
    await pub.close()


async def test_a_polling_mirror_watch_stops_even_when_a_cancel_meets_a_reply(
    supercluster: Supercluster, streams: None, nats_client: NatsClients
) -> None:
    # A watch that polls without pause is nearly always waiting for a reply, so stop()
    # often cancels it as one arrives: on Python 3.11 asyncio.wait_for (inside nats-py)
    # then loses the cancel, and `cancel(); await task` waited forever (half the trials).
    js = (await nats_client("us")).jetstream(timeout=5)
    for trial in range(20):
        watch = MirrorWatch(js, supercluster.topology, "us", SETTINGS, interval_s=0)
        watch.start()
        await asyncio.sleep(0.001 * (trial % 7))
        await watch.stop(timeout_s=30)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "mirror-watch"], trial
