"""A retry in another region, against a real 3-region supercluster: acknowledged as the
copy the first attempt stored (`duplicate`), not stored again; only connections younger
than the dedup window look; a connection's publishes keep their order while one looks,
and nobody else waits; a copy that cannot answer does not stop the publish."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from mesh.channels import channel_token
from mesh.directget import DirectReader
from mesh.elsewhere import Copy, RecentKeys, may_retry_elsewhere
from mesh.errors import MeshUnavailable
from mesh.message import StoredMessage
from mesh.publisher import Ack, Lane, Publication, Publisher
from mesh.replies import ReplyMux
from mesh.settings import MeshSettings
from mesh.subjects import mirror_name, stored_subject, stream_name
from tests.conftest import NatsClients
from tests.test_mesh_publish import streams

SETTINGS = MeshSettings()
WINDOW_MS = int(SETTINGS.duplicate_window_s * 1000)
REGIONS = ("eu", "us", "ap")
__all__ = ["streams"]  # the module's streams fixture, shared with test_mesh_publish


def test_only_connections_younger_than_the_window_may_carry_a_retry() -> None:
    assert may_retry_elsewhere(None, 10**12, WINDOW_MS)  # REST: always
    assert may_retry_elsewhere(1000, 1000, WINDOW_MS)
    assert may_retry_elsewhere(1000, 1000 + WINDOW_MS, WINDOW_MS)
    assert not may_retry_elsewhere(1000, 1001 + WINDOW_MS, WINDOW_MS)


async def first_in_eu(nats_client: NatsClients, pub: Publication) -> Ack:
    """Store `pub` in eu and wait until us's mirror of eu holds it."""
    eu = await nats_client("eu")
    publisher = Publisher(eu, "eu", SETTINGS)
    try:
        ack = await publisher.submit(pub)
    finally:
        await publisher.close()
    js = (await nats_client("us")).jetstream(timeout=5)
    deadline = time.monotonic() + 20
    while (await js.stream_info(mirror_name("eu", "us"))).state.last_seq < ack.seq:
        assert time.monotonic() < deadline, "us's mirror of eu did not catch up"
        await asyncio.sleep(0.02)
    return ack


async def stored_in_us(nats_client: NatsClients, channel: str) -> list[StoredMessage]:
    us = await nats_client("us")
    reader = DirectReader(us, ReplyMux(us), 5)
    subject = stored_subject("us", channel_token(channel))
    return await reader.after(stream_name("us"), subject, channel, 0, 100)


async def test_a_retry_elsewhere_is_acknowledged_as_the_first_copy(
    streams: None, nats_client: NatsClients
) -> None:
    first = await first_in_eu(
        nats_client, Publication("pay", b"1", message_id="pay-1", scope="tenant-a")
    )
    outcomes: list[str] = []
    us = Publisher(
        await nats_client("us"), "us", SETTINGS, others=REGIONS, on_check=outcomes.append
    )
    retry = await us.submit(Publication("pay", b"1", message_id="pay-1", scope="tenant-a"))
    assert (retry.serial, retry.seq, retry.duplicate) == (first.serial, first.seq, True)
    assert retry.message_id == "pay-1" and outcomes == ["found"]
    assert await stored_in_us(nats_client, "pay") == []  # not stored again
    # Another tenant's id, and the same id on another channel, are other messages.
    other = await us.submit(Publication("pay", b"2", message_id="pay-1", scope="tenant-b"))
    elsewhere = await us.submit(Publication("pay-2", b"3", message_id="pay-1", scope="tenant-a"))
    assert other.serial.startswith("us:") and not other.duplicate
    assert elsewhere.serial.startswith("us:") and not elsewhere.duplicate
    assert outcomes == ["found", "clear", "clear"]
    # Without a message_id there is nothing to look for.
    plain = await us.submit(Publication("pay", b"4"))
    assert plain.serial.startswith("us:") and outcomes == ["found", "clear", "clear"]
    await us.close()


async def test_only_a_connection_younger_than_the_window_looks(
    streams: None, nats_client: NatsClients
) -> None:
    first = await first_in_eu(nats_client, Publication("young", b"1", message_id="y-1"))
    now = time.time()
    outcomes: list[str] = []
    us = Publisher(
        await nats_client("us"),
        "us",
        SETTINGS,
        clock=lambda: now,
        others=REGIONS,
        on_check=outcomes.append,
    )
    now_ms = int(now * 1000)
    at_the_window = Lane(now_ms - WINDOW_MS)
    retry = await us.submit(Publication("young", b"1", message_id="y-1"), at_the_window)
    assert retry.serial == first.serial and retry.duplicate and outcomes == ["found"]
    # A connection opened before the window: whatever it retries was first sent on it.
    older = Lane(now_ms - WINDOW_MS - 1)
    stored = await us.submit(Publication("young", b"1", message_id="y-1"), older)
    assert stored.serial.startswith("us:") and not stored.duplicate and outcomes == ["found"]
    assert older.held is None  # it never waited
    # Switched off, even a new connection stores it (JetStream dedups it in us now).
    off = Publisher(
        await nats_client("us"),
        "us",
        MeshSettings(cross_region_dedup=False),
        others=REGIONS,
        on_check=outcomes.append,
    )
    again = await off.submit(Publication("young", b"1", message_id="y-1"), Lane(now_ms))
    assert again.serial == stored.serial and again.duplicate and outcomes == ["found"]
    await us.close()
    await off.close()


async def test_on_a_busy_channel_a_lookup_reads_only_what_came_since_the_last(
    streams: None, nats_client: NatsClients
) -> None:
    eu = Publisher(await nats_client("eu"), "eu", SETTINGS)
    acks = [await eu.submit(Publication("busy", b"1", message_id=f"b-{i}")) for i in range(30)]
    await eu.close()
    await first_in_eu(nats_client, Publication("busy", b"1", message_id="b-30"))
    us = Publisher(await nats_client("us"), "us", SETTINGS, others=("eu",))
    reader = us.recent.reader
    retry = await us.submit(Publication("busy", b"1", message_id="b-5"))
    assert retry.duplicate and retry.serial == acks[5].serial
    first_requests = reader.requests
    assert first_requests == 2  # the channel's newest message, then the window
    retry = await us.submit(Publication("busy", b"1", message_id="b-20"))
    assert retry.duplicate and retry.serial == acks[20].serial
    assert reader.requests == first_requests + 1  # only what came since
    assert us.recent.total == 31
    await us.close()


async def test_when_live_delivery_saw_nothing_new_the_answer_comes_at_once(
    streams: None, nats_client: NatsClients
) -> None:
    """What a hub following the channel would say (`live`): nothing from eu beyond what
    the first lookup read. Then a retry is acknowledged within `submit`, with no read
    and no task, and a new id is stored without waiting for a lookup."""
    first = await first_in_eu(nats_client, Publication("followed", b"1", message_id="f-1"))
    live = {"eu": first.seq, "ap": 0}
    outcomes: list[str] = []
    us = Publisher(
        await nats_client("us"),
        "us",
        SETTINGS,
        others=REGIONS,
        on_check=outcomes.append,
        live=lambda channel, origin: live[origin] if channel == "followed" else None,
    )
    reader = us.recent.reader
    assert (await us.submit(Publication("followed", b"1", message_id="f-1"))).duplicate
    reads = reader.requests
    lane = Lane(int(time.time() * 1000))
    again = us.submit(Publication("followed", b"1", message_id="f-1"), lane)
    assert again.done() and again.result().serial == first.serial and again.result().duplicate
    new = us.submit(Publication("followed", b"2", message_id="f-2"), lane)
    assert lane.held is None  # nothing waited for a lookup
    assert (await new).serial.startswith("us:") and not (await new).duplicate
    assert reader.requests == reads and us.recent.skipped == 4  # two lookups, two regions
    assert outcomes == ["found", "found", "clear"]
    # Live delivery saw a newer eu message: the next lookup reads again.
    live["eu"] = first.seq + 1
    assert not (await us.submit(Publication("followed", b"3", message_id="f-3"))).duplicate
    assert reader.requests == reads + 1
    await us.close()


class GatedPublisher(Publisher):
    """Looks elsewhere only once `gate` is set: a lookup that takes as long as a test needs
    (the copies themselves are real)."""

    gate: asyncio.Event

    async def _find(
        self, token: str, channel: str, key: str, since_ms: int
    ) -> tuple[StoredMessage | None, bool]:
        await self.gate.wait()
        return await super()._find(token, channel, key, since_ms)


async def test_a_lane_keeps_its_order_while_it_looks_and_others_do_not_wait(
    streams: None, nats_client: NatsClients
) -> None:
    # a lookup may take up to a minute here: the lane waits for it as long as it takes
    slow = MeshSettings(region_check_timeout_s=60.0)
    us = GatedPublisher(await nats_client("us"), "us", slow, others=REGIONS)
    us.gate = asyncio.Event()
    now_ms = int(time.time() * 1000)
    a = Lane(now_ms)
    held = [
        us.submit(Publication("lane", b'"a1"', message_id="a-1"), a),
        us.submit(Publication("lane", b'"a2"'), a),  # no id: waits only for its turn
        us.submit(Publication("lane", b'"a3"', message_id="a-3"), a),
    ]
    # Another connection, and a publication without an id, are stored meanwhile.
    b = await us.submit(Publication("lane", b'"b1"'), Lane(now_ms))
    assert b.serial.startswith("us:")
    assert not any(f.done() for f in held) and a.held is not None and len(a.held) == 3
    us.gate.set()
    acks = await asyncio.gather(*held)
    assert [x.duplicate for x in acks] == [False] * 3
    assert acks[0].seq < acks[1].seq < acks[2].seq and b.seq < acks[0].seq
    assert [m.data for m in await stored_in_us(nats_client, "lane")] == [
        b'"b1"',
        b'"a1"',
        b'"a2"',
        b'"a3"',
    ]
    # Closing the publisher fails what still waits behind a lookup: nothing hangs.
    us.gate = asyncio.Event()
    waiting = [
        us.submit(Publication("lane", b'"c1"', message_id="c-1"), Lane(now_ms)),
        us.submit(Publication("lane", b'"c2"', message_id="c-2")),
    ]
    await us.close()
    for fut in waiting:
        with pytest.raises(MeshUnavailable, match="closed"):
            await asyncio.wait_for(fut, 5)


async def test_a_copy_that_does_not_answer_does_not_stop_the_publish(
    streams: None, nats_client: NatsClients
) -> None:
    """Region zz has no stream here: its lookup fails at once and the publish is stored."""
    outcomes: list[str] = []
    us = Publisher(
        await nats_client("us"), "us", SETTINGS, others=("eu", "zz"), on_check=outcomes.append
    )
    ack = await us.submit(Publication("unanswered", b"1", message_id="u-1"))
    assert ack.serial.startswith("us:") and not ack.duplicate and outcomes == ["unanswered"]
    await us.close()


async def test_a_lookup_past_its_timeout_lets_the_publish_be_stored(
    streams: None, nats_client: NatsClients
) -> None:
    """The boundary of `region_check_timeout_s`: a lookup that answers within it is used;
    one that does not is given up, and the publish is stored then, not later."""
    first = await first_in_eu(nats_client, Publication("slow", b"1", message_id="s-1"))
    timeout = 1.0
    outcomes: list[str] = []
    us = GatedPublisher(
        await nats_client("us"),
        "us",
        MeshSettings(region_check_timeout_s=timeout),
        others=REGIONS,
        on_check=outcomes.append,
    )
    us.gate = asyncio.Event()
    asyncio.get_running_loop().call_later(timeout / 10, us.gate.set)
    within = await us.submit(Publication("slow", b"1", message_id="s-1"))
    assert within.serial == first.serial and within.duplicate and outcomes == ["found"]
    us.gate = asyncio.Event()  # never set: the lookup does not answer
    started = time.monotonic()
    late = await us.submit(Publication("slow", b"1", message_id="s-1"))
    took = time.monotonic() - started
    assert late.serial.startswith("us:") and not late.duplicate
    assert outcomes == ["found", "unanswered"] and timeout <= took < timeout + 1.0
    await us.close()


# -- RecentKeys against a copy held in memory (the reader is faked; the logic is real) --


def stored(seq: int, ts: int, key: str | None) -> StoredMessage:
    return StoredMessage("c", "eu", seq, None, f"id-{seq}", None, b"1", None, ts, key)


class MemoryCopy:
    """A DirectReader over a list of one channel's messages, counting the reads."""

    def __init__(self, messages: list[StoredMessage]) -> None:
        self.messages = messages
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None

    async def last(self, stream: str, subject: str, channel: str) -> StoredMessage | None:
        self.calls.append("last")
        if self.gate is not None:
            await self.gate.wait()
        return self.messages[-1] if self.messages else None

    async def since(
        self, stream: str, subject: str, channel: str, since_ms: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        self.calls.append("since")
        run = [m for m in self.messages if m.timestamp_ms >= since_ms and m.seq <= upto]
        return run[-limit:], len(run) > limit

    async def after(
        self, stream: str, subject: str, channel: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        self.calls.append("after")
        return [m for m in self.messages if m.seq > after_seq][:limit]


def recent_keys(
    copy: MemoryCopy,
    cap: int,
    max_keys: int = 100_000,
    live: Callable[[str, str], int | None] | None = None,
) -> RecentKeys:
    return RecentKeys(copy, cap, max_keys, live)  # type: ignore[arg-type]


async def test_what_live_delivery_knows_spares_the_read() -> None:
    copy = MemoryCopy([stored(s, 1000 + s, f"k{s}") for s in range(1, 4)])
    known: dict[str, int | None] = {"c": None}
    recent = recent_keys(copy, cap=100, live=lambda channel, origin: known[channel])
    assert await recent.find("eu", "t", "c", "k1", since_ms=0) == Copy("eu", 1, 1001)
    assert copy.calls == ["last", "since"]
    # Not followed live: read as usual.
    assert await recent.find("eu", "t", "c", "k9", since_ms=0) is None
    assert copy.calls[-1] == "after" and recent.skipped == 0
    # Live delivery has seen up to seq 3, all read already: nothing to read.
    known["c"] = 3
    assert await recent.find("eu", "t", "c", "k2", since_ms=0) == Copy("eu", 2, 1002)
    assert len(copy.calls) == 3 and recent.skipped == 1
    # Live delivery saw seq 4: read what came since.
    copy.messages.append(stored(4, 1004, "k4"))
    known["c"] = 4
    assert await recent.find("eu", "t", "c", "k4", since_ms=0) == Copy("eu", 4, 1004)
    assert copy.calls[-1] == "after" and recent.skipped == 1


async def test_later_lookups_read_only_what_came_since() -> None:
    copy = MemoryCopy([stored(s, 1000 + s, f"k{s}") for s in range(1, 31)])
    recent = recent_keys(copy, cap=100)
    found = await recent.find("eu", "t", "c", "k5", since_ms=0)
    assert found == Copy("eu", 5, 1005) and found.serial == "eu:5"
    assert copy.calls == ["last", "since"]
    assert await recent.find("eu", "t", "c", "k20", since_ms=0) == Copy("eu", 20, 1020)
    assert await recent.find("eu", "t", "c", "nope", since_ms=0) is None
    assert copy.calls == ["last", "since", "after", "after"]  # one small read each
    copy.messages.append(stored(31, 1031, "k31"))
    assert await recent.find("eu", "t", "c", "k31", since_ms=0) == Copy("eu", 31, 1031)
    assert recent.total == 31


async def test_a_quiet_channel_costs_one_read_and_old_keys_are_forgotten() -> None:
    copy = MemoryCopy([stored(1, 100, "old")])
    recent = recent_keys(copy, cap=100)
    # Its newest message is before the window: nothing more is read.
    assert await recent.find("eu", "t", "c", "old", since_ms=500) is None
    assert copy.calls == ["last"] and recent.total == 0
    copy.messages += [stored(2, 600, "a"), stored(3, 700, "b")]
    assert await recent.find("eu", "t", "c", "a", since_ms=500) == Copy("eu", 2, 600)
    # The window moves on: "a" is forgotten, "b" is still there.
    assert await recent.find("eu", "t", "c", "a", since_ms=650) is None
    assert await recent.find("eu", "t", "c", "b", since_ms=650) == Copy("eu", 3, 700)
    assert recent.total == 1


async def test_keys_are_bounded_per_channel_and_in_all() -> None:
    copy = MemoryCopy([stored(s, 1000 + s, f"k{s}") for s in range(1, 11)])
    recent = recent_keys(copy, cap=4, max_keys=6)
    # The first read keeps the newest `cap`; later ones too.
    assert await recent.find("eu", "t1", "c", "k6", since_ms=0) is None
    assert await recent.find("eu", "t1", "c", "k7", since_ms=0) == Copy("eu", 7, 1007)
    copy.messages += [stored(11, 1011, "k11")]
    assert await recent.find("eu", "t1", "c", "k7", since_ms=0) is None  # now 8..11
    assert recent.total == 4
    # A second channel would make 8 keys in all: the least recently used goes.
    assert await recent.find("eu", "t2", "c", "k11", since_ms=0) == Copy("eu", 11, 1011)
    assert recent.total == 4 and copy.calls.count("last") == 2
    assert await recent.find("eu", "t1", "c", "k11", since_ms=0) is not None
    assert copy.calls.count("last") == 3  # t1 was forgotten: read afresh


async def test_lookups_meanwhile_share_the_first_read() -> None:
    copy = MemoryCopy([stored(s, 1000 + s, f"k{s}") for s in range(1, 6)])
    copy.gate = asyncio.Event()
    recent = recent_keys(copy, cap=100)
    lookups = [
        asyncio.create_task(recent.find("eu", "t", "c", f"k{i}", since_ms=0)) for i in (1, 2, 9)
    ]
    await asyncio.sleep(0)  # all three are waiting now
    copy.gate.set()
    assert await asyncio.gather(*lookups) == [Copy("eu", 1, 1001), Copy("eu", 2, 1002), None]
    assert copy.calls == ["last", "since"] and recent.total == 5


async def test_keys_added_by_later_reads_count_toward_the_bound() -> None:
    copy = MemoryCopy([stored(1, 1001, "k1")])
    recent = recent_keys(copy, cap=10, max_keys=3)
    await recent.find("eu", "t1", "c", "k1", since_ms=0)
    await recent.find("eu", "t2", "c", "k1", since_ms=0)
    assert recent.total == 2
    copy.messages += [stored(2, 1002, "k2")]
    # t2 reads k2: three keys, at the bound.
    assert await recent.find("eu", "t2", "c", "k2", since_ms=0) == Copy("eu", 2, 1002)
    assert recent.total == 3
    copy.messages += [stored(3, 1003, "k3")]
    # t2 reads k3: four keys, over it: t1, the least recently used, is forgotten.
    assert await recent.find("eu", "t2", "c", "k3", since_ms=0) == Copy("eu", 3, 1003)
    assert recent.total == 3 and copy.calls.count("last") == 2
    await recent.find("eu", "t1", "c", "k1", since_ms=0)
    assert copy.calls.count("last") == 3  # read afresh
