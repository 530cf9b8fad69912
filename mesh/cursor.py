"""Channel cursors and the ``from`` of a subscribe. Pure.

A cursor is, for each origin region, the last sequence of the channel's messages in
that region's stream that the client has (a version vector; an absent region is 0).
It is encoded opaquely, compact and URL-safe::

    "1" + base64url(body + tag)      body = per region, sorted: len(name), name, uvarint(seq)
                                     tag  = blake2b-48(version, channel, body)

The tag binds the cursor to its channel and catches corruption: a cursor that was
altered, truncated or made for another channel raises :class:`CursorError` (code 40000),
as does one naming a region this deployment does not have.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from mesh.errors import CursorError

VERSION = "1"
_TAG_BYTES = 6
MAX_CURSOR_CHARS = 2048
_MAX_SEQ = (1 << 64) - 1


@dataclass(frozen=True)
class Cursor:
    """Per-origin last sequences. Positions of 0 are dropped, so equal cursors compare equal."""

    positions: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clean = {r: s for r, s in sorted(self.positions.items()) if s}
        for r, s in clean.items():
            if not 0 < s <= _MAX_SEQ:
                raise ValueError(f"sequence of {r!r} out of range: {s}")
        object.__setattr__(self, "positions", clean)

    def get(self, origin: str) -> int:
        return self.positions.get(origin, 0)

    def advanced(self, origin: str, seq: int) -> Cursor:
        """This cursor with `origin` moved forward to `seq` (never backwards)."""
        if seq <= self.get(origin):
            return self
        return Cursor({**self.positions, origin: seq})

    def merged(self, other: Cursor) -> Cursor:
        """The element-wise maximum: a position at or after both."""
        out = dict(self.positions)
        for r, s in other.positions.items():
            if s > out.get(r, 0):
                out[r] = s
        return Cursor(out)

    def covers(self, other: Cursor) -> bool:
        """True when this cursor is at or after `other` for every origin."""
        return all(self.get(r) >= s for r, s in other.positions.items())


def _uvarint(n: int, out: bytearray) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _tag(channel: str, body: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=_TAG_BYTES, person=b"em-cursor")
    h.update(VERSION.encode())
    h.update(channel.encode("utf-8"))
    h.update(b"\x00")
    h.update(body)
    return h.digest()


def encode_positions(channel: str, positions: Mapping[str, int]) -> str:
    """Encode a position map (the hot path; skips building a Cursor)."""
    body = bytearray()
    for region in sorted(positions):
        seq = positions[region]
        if seq <= 0:
            continue
        name = region.encode("ascii")
        body.append(len(name))
        body += name
        _uvarint(seq, body)
    raw = bytes(body) + _tag(channel, bytes(body))
    return VERSION + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def encode_cursor(channel: str, cursor: Cursor) -> str:
    return encode_positions(channel, cursor.positions)


def decode_cursor(channel: str, text: object, regions: Collection[str]) -> Cursor:
    """Decode and validate a cursor of `channel`. Raises CursorError (code 40000)."""
    if not isinstance(text, str) or not text:
        raise CursorError("cursor must be a non-empty string")
    if len(text) > MAX_CURSOR_CHARS:
        raise CursorError("cursor is too long")
    if text[0] != VERSION:
        raise CursorError("cursor has an unknown version")
    b64 = text[1:]
    try:
        raw = base64.b64decode(b64 + "=" * (-len(b64) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise CursorError("cursor is corrupt (not base64url)") from None
    if len(raw) < _TAG_BYTES:
        raise CursorError("cursor is corrupt (too short)")
    body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
    if _tag(channel, body) != tag:
        raise CursorError("cursor is corrupt or belongs to another channel")
    positions: dict[str, int] = {}
    i = 0
    previous = ""
    try:
        while i < len(body):
            n = body[i]
            name = body[i + 1 : i + 1 + n].decode("ascii")
            if len(name) != n or not name or name <= previous:
                raise CursorError("cursor is corrupt (bad region list)")
            previous = name
            i += 1 + n
            seq, shift = 0, 0
            while True:
                b = body[i]
                i += 1
                seq |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    break
                if shift > 63:
                    raise CursorError("cursor is corrupt (sequence too large)")
            if seq == 0 or seq > _MAX_SEQ:
                raise CursorError("cursor is corrupt (bad sequence)")
            positions[name] = seq
    except (IndexError, UnicodeDecodeError):
        raise CursorError("cursor is corrupt (truncated)") from None
    unknown = sorted(set(positions) - set(regions))
    if unknown:
        raise CursorError(f"cursor names unknown region {unknown[0]!r}")
    cursor = Cursor(positions)
    if encode_cursor(channel, cursor) != text:
        raise CursorError("cursor is corrupt (not canonical)")
    return cursor


@dataclass(frozen=True)
class Live:
    """Start at the live point."""


@dataclass(frozen=True)
class FromCursor:
    """Replay everything after this cursor, then live."""

    cursor: str


@dataclass(frozen=True)
class Rewind:
    """Replay the last `count` messages, then live."""

    count: int


Start = Live | FromCursor | Rewind


def parse_start(value: object, max_rewind: int) -> Start:
    """The subscribe frame's ``from`` (None: live). Raises CursorError for a bad shape.

    Accepts ``{"cursor": str}`` or ``{"rewind": int}`` with 0 <= rewind <= max_rewind.
    The cursor's content is validated later, against the channel and the regions.
    """
    if value is None:
        return Live()
    if not isinstance(value, dict) or len(value) != 1:
        raise CursorError('"from" must be {"cursor": "..."} or {"rewind": N}')
    if "cursor" in value:
        c = value["cursor"]
        if not isinstance(c, str) or not c:
            raise CursorError('"from.cursor" must be a non-empty string')
        return FromCursor(c)
    if "rewind" in value:
        n = value["rewind"]
        if not isinstance(n, int) or isinstance(n, bool):
            raise CursorError('"from.rewind" must be an integer')
        if n < 0:
            raise CursorError('"from.rewind" must not be negative')
        if n > max_rewind:
            raise CursorError(f'"from.rewind" must be at most {max_rewind}')
        return Rewind(n)
    raise CursorError('"from" must be {"cursor": "..."} or {"rewind": N}')
