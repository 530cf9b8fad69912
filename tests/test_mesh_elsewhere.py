"""A retry in another region, against a real 3-region supercluster: acknowledged as the
copy the first attempt stored (`duplicate`), not stored again; only connections younger
than the dedup window look; a connection's publishes keep their order while one looks,
and nobody else waits; a copy that cannot answer does not stop the publish."""

from __future__ import annotations

import asyncio
import time

import pytest

from mesh.channels import channel_token
from mesh.directget import DirectReader
from mesh.elsewhere import may_retry_elsewhere
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
