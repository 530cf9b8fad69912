"""Reading stored channel messages from the local copy of a stream (batch direct get).

A direct get addressed to an origin's stream name is answered, in another region, by
that region's mirror (``mirror_direct``): so every read here is local, and keeps
working while the origin region is down. One request ``{"seq", "next_by_subj",
"batch"}`` returns up to `batch` messages and ends with a 204 EOB status.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import replace
from datetime import UTC, datetime

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from mesh.errors import MeshUnavailable
from mesh.message import MessageFormatError, StoredMessage, decode_stored
from mesh.replies import ReplyMux
from mesh.subjects import direct_get_subject

_PENDING = "Nats-Num-Pending"


class _Batch:
    def __init__(self, channel: str, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.messages: list[tuple[StoredMessage, int]] = []
        self.done: asyncio.Future[str] = loop.create_future()

    def on_reply(self, msg: Msg) -> None:
        if self.done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status:
            self.done.set_result(status)
            return
        try:
            # In a batch reply Nats-Last-Sequence is the previous message OF THE REPLY
            # (0 for the first), not the subject chain of a republished copy: drop it.
            m = replace(decode_stored(headers, msg.data, self.channel), last_seq=None)
        except MessageFormatError as exc:
            self.done.set_exception(MeshUnavailable(f"unreadable stored message: {exc}"))
            return
        self.messages.append((m, int(headers.get(_PENDING, "0") or 0)))


class DirectReader:
    """Batch direct gets over one shared reply inbox."""

    def __init__(self, nc: Client, mux: ReplyMux, timeout_s: float) -> None:
        self.nc = nc
        self.mux = mux
        self.timeout_s = timeout_s
        self.requests = 0

    async def _request(
        self, stream: str, body: dict[str, object], channel: str
    ) -> list[tuple[StoredMessage, int]]:
        if not self.nc.is_connected:
            raise MeshUnavailable("not connected to NATS")
        await self.mux.start()
        batch = _Batch(channel, asyncio.get_running_loop())
        token, reply = self.mux.open(batch.on_reply)
        self.requests += 1
        try:
            await self.nc.publish(
                direct_get_subject(stream), json.dumps(body).encode(), reply=reply
            )
            status = await asyncio.wait_for(batch.done, self.timeout_s)
        except TimeoutError:
            raise MeshUnavailable(f"no answer from a copy of {stream} in time") from None
        finally:
            self.mux.close(token)
        if status in ("204", "404"):
            return batch.messages
        if status == "503":
            raise MeshUnavailable(f"no copy of {stream} is reachable")
        if status == "200" and "batch" not in body:  # never: single gets have no status
            return batch.messages
        raise MeshUnavailable(f"direct get on {stream} failed with status {status}")

    async def after(
        self, stream: str, subject: str, channel: str, after_seq: int, limit: int
    ) -> list[StoredMessage]:
        """Up to `limit` messages of `subject` with seq > `after_seq`, in order."""
        body = {"seq": after_seq + 1, "next_by_subj": subject, "batch": limit}
        return [m for m, _ in await self._request(stream, body, channel)]

    async def range(
        self, stream: str, subject: str, channel: str, after_seq: int, upto: int, batch: int
    ) -> list[StoredMessage]:
        """Every message of `subject` in (after_seq, upto] the copy has, in order."""
        out: list[StoredMessage] = []
        cursor = after_seq
        while cursor < upto:
            got = await self.after(stream, subject, channel, cursor, batch)
            out.extend(m for m in got if m.seq <= upto)
            if len(got) < batch or not got or got[-1].seq >= upto:
                break
            cursor = got[-1].seq
        return out

    async def last(self, stream: str, subject: str, channel: str) -> StoredMessage | None:
        """The newest message of `subject` in the copy, or None when it has none.

        (Messages read here have ``last_seq`` None: replies do not carry the subject chain.)
        """
        got = await self._request(stream, {"multi_last": [subject], "batch": 1}, channel)
        return got[-1][0] if got else None

    async def since(
        self, stream: str, subject: str, channel: str, since_ms: int, upto: int, limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """The messages of `subject` stored at or after `since_ms` with seq <= `upto`, and
        whether there were more than `limit` of them (then the newest `limit`: those
        nearest `upto`).

        One batch direct get with ``start_time`` when they fit. (The server answers a
        ``start_time`` later than every stored message from the stream's first message,
        checked on 2.15.1: a reply starting before `since_ms` means there is none.)
        """
        if upto <= 0:
            return [], False
        body = {"start_time": rfc3339_ms(since_ms), "next_by_subj": subject, "batch": limit}
        got = await self._request(stream, body, channel)
        if not got or got[0][0].timestamp_ms < since_ms:
            return [], False
        run = [m for m, _ in got if m.seq <= upto]
        last, pending = got[-1]
        if len(got) < limit or last.seq >= upto or pending == 0:
            return run, False
        tail = await self.last_n(stream, subject, channel, limit, upto, limit)
        return [m for m in tail if m.timestamp_ms >= since_ms], True

    async def holds(self, stream: str, subject: str, channel: str, seq: int) -> bool:
        """Whether the copy still holds the message `seq` of `subject`."""
        got = await self.pending_from(stream, subject, channel, seq)
        return got is not None and got[0].seq == seq

    async def first_seq(self, stream: str) -> int:
        """The copy's first sequence (1 while it never removed a message from its front)."""
        if not self.nc.is_connected:
            raise MeshUnavailable("not connected to NATS")
        try:
            reply = await self.nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", self.timeout_s)
            state = json.loads(reply.data)["state"]
            return int(state["first_seq"])
        except (nats.errors.Error, OSError, ValueError, KeyError, TypeError, TimeoutError) as e:
            raise MeshUnavailable(f"no stream info for {stream}: {e}") from None

    async def pending_from(
        self, stream: str, subject: str, channel: str, seq: int
    ) -> tuple[StoredMessage, int] | None:
        """The first message of `subject` at or after `seq`, with how many follow it."""
        got = await self._request(
            stream, {"seq": max(1, seq), "next_by_subj": subject, "batch": 1}, channel
        )
        return got[0] if got else None

    async def last_n(
        self, stream: str, subject: str, channel: str, n: int, upto: int, batch: int
    ) -> list[StoredMessage]:
        """The last `n` messages of `subject` with seq <= `upto`, in order.

        Binary search on ``Nats-Num-Pending`` (messages of the subject after a given one)
        finds where they start, then one range read fetches them: about log2(upto)
        small requests instead of reading the channel's whole history.
        """
        if n <= 0 or upto <= 0:
            return []
        end = await self.pending_from(stream, subject, channel, upto)
        # Messages after `upto`: those following the message at/after upto, plus itself if
        # it is beyond upto.
        beyond = 0 if end is None else end[1] + (1 if end[0].seq > upto else 0)
        first = await self.pending_from(stream, subject, channel, 1)
        if first is None:
            return []
        total = first[1] + 1 - beyond  # messages of the subject with seq <= upto
        if total <= n:
            return await self.range(stream, subject, channel, first[0].seq - 1, upto, batch)
        want = n - 1 + beyond  # pending count of the first message we want
        lo, hi = first[0].seq, upto  # invariant: pending_from(lo) > want
        while lo < hi:
            mid = (lo + hi + 1) // 2
            got = await self.pending_from(stream, subject, channel, mid)
            if got is not None and got[1] >= want:
                if got[1] == want:
                    return await self.range(stream, subject, channel, got[0].seq - 1, upto, batch)
                lo = mid
            else:
                hi = mid - 1
        start = await self.pending_from(stream, subject, channel, lo + 1)
        if start is None:
            return []
        return await self.range(stream, subject, channel, start[0].seq - 1, upto, batch)


def rfc3339_ms(ms: int) -> str:
    """A millisecond Unix time as RFC 3339 UTC (what ``start_time`` takes)."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _parse_header_block(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    lines = raw.decode("utf-8", "replace").split("\r\n")
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key:
            headers.setdefault(key.strip(), value.strip())
    return headers


def stored_from_api(resp: dict[str, object], channel: str) -> StoredMessage:
    """A StoredMessage from a ``STREAM.MSG.GET`` JSON reply's ``message`` object."""
    m = resp.get("message")
    if not isinstance(m, dict):
        raise MessageFormatError("no message in reply")
    headers = _parse_header_block(base64.b64decode(m.get("hdrs") or ""))
    headers["Nats-Subject"] = str(m.get("subject"))
    headers["Nats-Sequence"] = str(m.get("seq"))
    headers["Nats-Time-Stamp"] = _rfc3339_z(str(m.get("time")))
    data = base64.b64decode(m.get("data") or "")
    return decode_stored(headers, data, channel)


def _rfc3339_z(text: str) -> str:
    # The API gives "…Z" already; be lenient with "+00:00".
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class OriginReader:
    """Reads from an origin stream itself (its leader) through the JetStream API.

    Slower than a direct get (one message per request, across the gateway) but never
    behind: used when the local mirror lags and to learn the true newest sequence.
    """

    def __init__(self, nc: Client, timeout_s: float) -> None:
        self.nc = nc
        self.timeout_s = timeout_s

    async def _get(
        self, stream: str, body: dict[str, object], timeout_s: float | None = None
    ) -> dict[str, object] | None:
        if not self.nc.is_connected:
            raise MeshUnavailable("not connected to NATS")
        try:
            reply = await self.nc.request(
                f"$JS.API.STREAM.MSG.GET.{stream}",
                json.dumps(body).encode(),
                timeout_s if timeout_s is not None else self.timeout_s,
            )
            resp = json.loads(reply.data)
        except (nats.errors.Error, OSError, ValueError, TimeoutError) as exc:
            raise MeshUnavailable(f"origin stream {stream} not reachable: {exc}") from None
        if not isinstance(resp, dict):
            raise MeshUnavailable(f"origin stream {stream}: unreadable reply")
        err = resp.get("error")
        if isinstance(err, dict):
            if err.get("code") == 404:
                return None
            raise MeshUnavailable(f"origin stream {stream}: {err.get('description')}")
        return resp

    async def last_seq(self, stream: str, subject: str, timeout_s: float | None = None) -> int:
        """The newest seq of `subject` in the origin stream (0 when it has none)."""
        resp = await self._get(stream, {"last_by_subj": subject}, timeout_s)
        if resp is None:
            return 0
        m = resp.get("message")
        return int(m["seq"]) if isinstance(m, dict) else 0

    async def range(
        self, stream: str, subject: str, channel: str, after_seq: int, upto: int, limit: int
    ) -> list[StoredMessage]:
        """Up to `limit` messages of `subject` in (after_seq, upto], one request each."""
        out: list[StoredMessage] = []
        seq = after_seq
        while seq < upto and len(out) < limit:
            resp = await self._get(stream, {"seq": seq + 1, "next_by_subj": subject})
            if resp is None:
                break
            try:
                m = stored_from_api(resp, channel)
            except (MessageFormatError, ValueError) as exc:
                raise MeshUnavailable(f"origin stream {stream}: {exc}") from None
            if m.seq > upto:
                break
            out.append(m)
            seq = m.seq
        return out
