"""A stored channel message, decoded in one place from a republished copy or a direct get.

Publish headers (written by :mod:`mesh.publisher`): ``Nats-Msg-Id`` (the dedup key:
the key scope, a digest of the channel and the publisher's message id, only when the
publisher gave one),
``Em-Id`` (the message id clients see), ``Em-Name`` and ``Em-Client`` (optional).
Values are percent-encoded so no client text can break the header block. JetStream
adds ``Nats-Subject``, ``Nats-Sequence``, ``Nats-Time-Stamp`` and, on republished
copies and batch direct gets, ``Nats-Last-Sequence``.
"""

from __future__ import annotations

import calendar
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, unquote

from mesh.channels import token_channel

H_DEDUP = "Nats-Msg-Id"
H_ID = "Em-Id"
H_NAME = "Em-Name"
H_CLIENT = "Em-Client"
H_SUBJECT = "Nats-Subject"
H_SEQ = "Nats-Sequence"
H_TIME = "Nats-Time-Stamp"
H_LAST = "Nats-Last-Sequence"

# Printable ASCII except '%' (the escape) and space (header parsers strip it).
_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) != "%")


def header_value(text: str) -> str:
    """`text` made safe for a NATS header value (reversible with :func:`unquote`)."""
    return quote(text, safe=_SAFE)


def dedup_key(scope: str, channel: str, message_id: str) -> str:
    """The key JetStream and the hub deduplicate on.

    Tenants (key scopes) never collide, and neither do channels: JetStream deduplicates
    per stream, and one region's stream holds every channel, so the same `message_id` on
    two channels must make two keys (a short digest keeps long channel names out of it).
    """
    digest = hashlib.blake2b(channel.encode(), digest_size=12).hexdigest()
    return f"{quote(scope, safe='')}:{digest}:{header_value(message_id)}"


class MessageFormatError(ValueError):
    """A NATS message that is not a stored channel message (missing or bad headers)."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    channel: str
    origin: str
    seq: int
    last_seq: int | None  # previous seq of this channel in the origin stream; None: not told
    id: str
    name: str | None
    data: bytes
    client_id: str | None
    timestamp_ms: int
    dedup_key: str | None  # None when the edge assigned the id (nothing to deduplicate)

    @property
    def serial(self) -> str:
        return f"{self.origin}:{self.seq}"


@lru_cache(maxsize=4096)
def _epoch_seconds(prefix: str) -> int:
    return calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))


def parse_timestamp_ms(text: str) -> int:
    """Milliseconds since the epoch of JetStream's ``2026-11-29T11:52:43.819897152Z`` (UTC)."""
    if len(text) < 20 or text[-1] != "Z":
        raise MessageFormatError(f"bad timestamp {text!r}")
    try:
        secs = _epoch_seconds(text[:19])
    except ValueError:
        raise MessageFormatError(f"bad timestamp {text!r}") from None
    frac = text[20:-1] if text[19] == "." else ""
    ms = int((frac + "000")[:3]) if frac.isdigit() else 0
    return secs * 1000 + ms


def _opt(headers: Mapping[str, str], key: str) -> str | None:
    v = headers.get(key)
    return None if v is None else unquote(v)


def decode_stored(
    headers: Mapping[str, str] | None, data: bytes, channel: str | None = None
) -> StoredMessage:
    """Decode a republished copy or a direct-get reply. Raises MessageFormatError.

    `channel` may be passed when the caller already knows it (saves decoding the token).
    """
    if not headers:
        raise MessageFormatError("no headers")
    try:
        subject = headers[H_SUBJECT]
        seq = int(headers[H_SEQ])
        ts = parse_timestamp_ms(headers[H_TIME])
    except (KeyError, ValueError) as exc:
        raise MessageFormatError(f"missing or bad JetStream header: {exc}") from None
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != "em" or parts[1] != "msg":
        raise MessageFormatError(f"not a channel subject: {subject!r}")
    last = headers.get(H_LAST)
    mid = _opt(headers, H_ID)
    return StoredMessage(
        channel=channel if channel is not None else token_channel(parts[3]),
        origin=parts[2],
        seq=seq,
        last_seq=int(last) if last is not None else None,
        id=mid if mid is not None else f"{parts[2]}:{seq}",
        name=_opt(headers, H_NAME),
        data=bytes(data),
        client_id=_opt(headers, H_CLIENT),
        timestamp_ms=ts,
        dedup_key=headers.get(H_DEDUP),
    )
