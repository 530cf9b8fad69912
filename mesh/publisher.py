"""Durable, pipelined, idempotent publishing of channel messages to the region's stream.

:meth:`Publisher.submit` is a plain call that queues the publication and returns a
future: one writer task sends queued publications to NATS in submission order, so a
connection's publishes are stored in the order it made them without waiting for each
ack. Every future resolves: to an :class:`Ack` (JetStream's PubAck: the message is
durable), or to :class:`MeshUnavailable` at once when NATS is disconnected, or when no
PubAck came within ``publish_timeout_s``. One timer watches every publication's
deadline (they expire in the order they were submitted), not one timer each.

A publication with a ``message_id`` that may retry an attempt stored in another region
(see :mod:`mesh.elsewhere`) is first looked up in this region's copies of the other
regions' streams; one found there is acknowledged as that copy (``duplicate``) and not
stored again. While a lookup runs, the later publications of the same :class:`Lane`
(one client connection) wait behind it, so a lane's publications are stored in the
order it made them; other lanes do not wait.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from mesh.cancellation import cancel_and_wait
from mesh.channels import channel_token
from mesh.directget import DirectReader
from mesh.elsewhere import (
    Copy,
    RecentKeys,
    find_elsewhere,
    find_elsewhere_now,
    may_retry_elsewhere,
)
from mesh.errors import MeshUnavailable
from mesh.message import H_CLIENT, H_DEDUP, H_ID, H_NAME, dedup_key, header_value
from mesh.replies import ReplyMux
from mesh.settings import MeshSettings
from mesh.subjects import stored_subject

log = logging.getLogger(__name__)

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32


def assign_message_id(now_ms: int, entropy: bytes) -> str:
    """``m-`` + 26 chars, time-ordered (ULID layout): ids the edge gives unnamed messages."""
    n = (now_ms << 80) | int.from_bytes(entropy[:10], "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[n & 31])
        n >>= 5
    return "m-" + "".join(reversed(chars))


@dataclass(frozen=True, slots=True)
class Publication:
    channel: str
    data: bytes  # the JSON text of `data`
    name: str | None = None
    message_id: str | None = None
    client_id: str | None = None
    scope: str = ""  # the API key id the publisher's token was minted with


@dataclass(frozen=True, slots=True)
class Ack:
    serial: str
    seq: int
    message_id: str
    duplicate: bool
    timestamp_ms: int  # this edge's clock when the PubAck arrived


@dataclass(slots=True, eq=False)
class _Pending:
    subject: str
    data: bytes
    headers: dict[str, str]
    message_id: str
    future: asyncio.Future[Ack]
    deadline: float  # time.monotonic() when it expires
    token: str = ""
    # the lookup in other regions' copies; None when the publication needs none
    check: asyncio.Task[Copy | None] | None = None


class Lane:
    """The publications of one client connection: stored in the order it made them,
    even while one of them waits for its lookup in other regions' copies (the later ones
    wait here, not in the publisher's queue, so other lanes never wait for it)."""

    __slots__ = ("held", "opened_ms")

    def __init__(self, opened_ms: int) -> None:
        self.opened_ms = opened_ms  # the publisher's clock, in ms, when the connection opened
        # publications waiting behind one that looks elsewhere (made when first needed:
        # an empty deque costs ~600 bytes, and most connections never need it)
        self.held: collections.deque[_Pending] | None = None


class _Entropy:
    """Random bytes from the OS, drawn in blocks: one system call per 409 message ids."""

    BLOCK = 4096

    def __init__(self) -> None:
        self._block = b""
        self._at = 0

    def take(self, n: int) -> bytes:
        if self._at + n > len(self._block):
            self._block, self._at = os.urandom(self.BLOCK), 0
        out = self._block[self._at : self._at + n]
        self._at += n
        return out


class Publisher:
    def __init__(
        self,
        nc: Client,
        region: str,
        settings: MeshSettings,
        clock: Callable[[], float] = time.time,
        mux: ReplyMux | None = None,
        others: Sequence[str] = (),
        on_check: Callable[[str], None] | None = None,
        live: Callable[[str, str], int | None] | None = None,
    ) -> None:
        """`others`: the regions whose streams this region mirrors, looked up before
        storing a publication that may retry one of theirs (none: no lookup).
        `on_check` is told each lookup's outcome: ``found``, ``clear`` or ``unanswered``.
        `live`: what live delivery knows of a channel (``ChannelHub.live_position``),
        which spares a lookup its read when nothing new came (:class:`RecentKeys`)."""
        self.nc = nc
        self.region = region
        self.settings = settings
        self.clock = clock
        self.mux = mux or ReplyMux(nc)
        self.others = tuple(o for o in others if o != region)
        self.on_check = on_check
        self.recent = RecentKeys(
            DirectReader(nc, self.mux, settings.region_check_timeout_s),
            settings.dedup_lookbehind,
            live=live,
        )
        self._checks: set[asyncio.Task[Copy | None]] = set()
        self._closed = False
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        # Unanswered publications, oldest first: their deadlines come in this order.
        self._pending: dict[_Pending, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._entropy = _Entropy()

    def submit(self, pub: Publication, lane: Lane | None = None) -> asyncio.Future[Ack]:
        """Queue `pub`; the future gives its Ack or fails with MeshUnavailable.

        `lane`: the client connection's, whose publications keep their order; None for a
        request on its own (REST). Raises ChannelError at once for an invalid channel name.
        """
        token = channel_token(pub.channel)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Ack] = loop.create_future()
        if not self.nc.is_connected:
            fut.set_exception(MeshUnavailable("not connected to NATS"))
            return fut
        now_ms = int(self.clock() * 1000)
        mid = pub.message_id
        headers: dict[str, str] = {}
        key = None
        if mid is None:
            mid = assign_message_id(now_ms, self._entropy.take(10))
        else:
            key = headers[H_DEDUP] = dedup_key(pub.scope, pub.channel, mid)
        headers[H_ID] = header_value(mid)
        if pub.name is not None:
            headers[H_NAME] = header_value(pub.name)
        if pub.client_id is not None:
            headers[H_CLIENT] = header_value(pub.client_id)
        deadline = time.monotonic() + self.settings.publish_timeout_s
        p = _Pending(stored_subject(self.region, token), pub.data, headers, mid, fut, deadline)
        fut.add_done_callback(functools.partial(self._done, p))
        self._pending[p] = None
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.settings.publish_timeout_s, self._sweep)
        window_ms = int(self.settings.duplicate_window_s * 1000)
        if (
            key is not None
            and self.others
            and self.settings.cross_region_dedup
            and may_retry_elsewhere(None if lane is None else lane.opened_ms, now_ms, window_ms)
        ):
            since_ms = now_ms - window_ms
            decided, found = find_elsewhere_now(
                self.recent, self.others, token, pub.channel, key, since_ms
            )
            if not decided:  # a read is needed: look in a task, the lane waits for it
                p.check = loop.create_task(self._look_elsewhere(token, pub.channel, key, since_ms))
                self._checks.add(p.check)
                p.check.add_done_callback(self._checks.discard)
            else:
                if self.on_check is not None:
                    self.on_check("clear" if found is None else "found")
                if found is not None:  # nothing to store, so no order to keep
                    fut.set_result(self._duplicate(found, p.message_id))
                    return fut
        if lane is None:
            if p.check is None:
                self._enqueue(p)
            else:
                p.check.add_done_callback(lambda _t: self._checked(p))
        elif lane.held or p.check is not None:
            if lane.held is None:
                lane.held = collections.deque()
            lane.held.append(p)
            if p.check is not None:
                p.check.add_done_callback(lambda _t: self._release(lane))
        else:
            self._enqueue(p)
        return fut

    def _enqueue(self, p: _Pending) -> None:
        self._queue.append(p)
        if self._writer is None or self._writer.done():
            self._wake = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="mesh-publisher"
            )
        else:
            assert self._wake is not None
            self._wake.set()

    async def _look_elsewhere(
        self, token: str, channel: str, key: str, since_ms: int
    ) -> Copy | None:
        try:
            found, answered = await asyncio.wait_for(
                self._find(token, channel, key, since_ms),
                self.settings.region_check_timeout_s,
            )
        except (MeshUnavailable, TimeoutError):
            found, answered = None, False
        if found is None and not answered:
            log.debug("a copy of another region's stream did not answer; storing %s", key)
        if self.on_check is not None:
            self.on_check("found" if found is not None else "clear" if answered else "unanswered")
        return found

    async def _find(
        self, token: str, channel: str, key: str, since_ms: int
    ) -> tuple[Copy | None, bool]:
        return await find_elsewhere(self.recent, self.others, token, channel, key, since_ms)

    def _checked(self, p: _Pending) -> None:
        """`p`'s lookup is over (or it had none): acknowledge the copy found elsewhere,
        or queue `p` to be stored."""
        if p.future.done():
            return
        found = None
        if p.check is not None and not p.check.cancelled() and p.check.exception() is None:
            found = p.check.result()
        if found is not None:
            p.future.set_result(self._duplicate(found, p.message_id))
        elif self._closed:
            p.future.set_exception(MeshUnavailable("publisher closed"))
        else:
            self._enqueue(p)

    def _duplicate(self, copy: Copy, message_id: str) -> Ack:
        """The ack of a publication whose first copy `copy` was stored in another region."""
        return Ack(
            serial=copy.serial,
            seq=copy.seq,
            message_id=message_id,
            duplicate=True,
            timestamp_ms=int(self.clock() * 1000),
        )

    def _release(self, lane: Lane) -> None:
        """Hand on the lane's publications, in order, up to the first still looking."""
        held = lane.held
        while held:
            p = held[0]
            if p.check is not None and not p.check.done():
                return
            held.popleft()
            self._checked(p)

    def _sweep(self) -> None:
        """Fail the publications past their deadline; watch the next one's."""
        self._sweeper = None
        now = time.monotonic()
        while self._pending:
            p = next(iter(self._pending))
            if p.deadline > now:  # and so are all the later ones
                delay = p.deadline - now
                self._sweeper = asyncio.get_running_loop().call_later(delay, self._sweep)
                return
            del self._pending[p]
            if not p.future.done():
                p.future.set_exception(
                    MeshUnavailable(
                        f"JetStream did not acknowledge within {self.settings.publish_timeout_s} s"
                    )
                )

    def _done(self, p: _Pending, _fut: object = None) -> None:
        self._pending.pop(p, None)
        if p.token:
            self.mux.close(p.token)

    def _on_ack(self, p: _Pending, msg: Msg) -> None:
        if p.future.done():
            return
        headers = msg.headers or {}
        if headers.get("Status") == "503":
            p.future.set_exception(MeshUnavailable("no stream answers for this region"))
            return
        try:
            resp = json.loads(msg.data)
            if "error" in resp:
                desc = resp["error"].get("description", "error")
                p.future.set_exception(MeshUnavailable(f"JetStream refused: {desc}"))
                return
            seq = int(resp["seq"])
        except (ValueError, KeyError, TypeError, AttributeError):
            p.future.set_exception(MeshUnavailable("unreadable PubAck"))
            return
        p.future.set_result(
            Ack(
                serial=f"{self.region}:{seq}",
                seq=seq,
                message_id=p.message_id,
                duplicate=bool(resp.get("duplicate")),
                timestamp_ms=int(self.clock() * 1000),
            )
        )

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self.mux.ready:
                try:
                    await self.mux.start()
                except (nats.errors.Error, OSError) as exc:
                    self._fail_all(f"cannot subscribe for acks: {exc}")
                    continue
            while self._queue:
                p = self._queue.popleft()
                if p.future.done():
                    continue
                if not self.nc.is_connected:
                    p.future.set_exception(MeshUnavailable("not connected to NATS"))
                    continue
                p.token, reply = self.mux.open(functools.partial(self._on_ack, p))
                try:
                    await self.nc.publish(p.subject, p.data, reply=reply, headers=p.headers)
                except (nats.errors.Error, OSError) as exc:
                    p.future.set_exception(MeshUnavailable(f"publish failed: {exc}"))

    def _fail_all(self, reason: str) -> None:
        while self._queue:
            p = self._queue.popleft()
            if not p.future.done():
                p.future.set_exception(MeshUnavailable(reason))

    @property
    def in_flight(self) -> int:
        """Publications submitted and not yet answered."""
        return len(self._pending)

    def connection_lost(self) -> None:
        """Fail every unanswered publication now (call from nats-py's disconnected
        callback): its PubAck, if any, is lost with the connection. The message may have
        been stored; a retry with the same message_id is acknowledged as a duplicate."""
        for p in list(self._pending):
            if not p.future.done():
                p.future.set_exception(MeshUnavailable("connection to NATS lost"))

    async def close(self, timeout_s: float = 2.0) -> None:
        """Fail what is still queued and stop the writer (given up on after `timeout_s`)."""
        self._closed = True
        self._fail_all("publisher closed")
        tasks = [*self._checks, *([self._writer] if self._writer is not None else [])]
        if tasks and await cancel_and_wait(tasks, timeout_s):
            log.warning("publisher writer did not stop within %s s", timeout_s)
