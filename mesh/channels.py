"""Channel names and their NATS subject tokens. Pure.

A channel name is 1-255 bytes of UTF-8 with no whitespace or control characters;
anything else is legal, including ``.``, ``*`` and ``>``. :func:`channel_token`
maps it to one subject token by an injective, canonical escaping: bytes of
``[A-Za-z0-9_:-]`` stay as they are, every other byte becomes ``~XX`` (uppercase
hex). The token therefore never contains ``.``, ``*``, ``>`` or whitespace, is never
empty, and is at most 765 bytes (well below the ~4 KB at which NATS drops the
connection).
"""

from __future__ import annotations

import unicodedata

from mesh.errors import ChannelError

MAX_CHANNEL_BYTES = 255

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_:-")
_HEX = "0123456789ABCDEF"
# Precomputed per-byte encoding: the token of a name is the join of its bytes' pieces.
_PIECE = tuple(chr(b) if b in _PLAIN else f"~{b:02X}" for b in range(256))
_UNHEX = {f"{b:02X}": b for b in range(256)}


def validate_channel(name: object) -> None:
    """Raise ChannelError unless `name` is 1-255 bytes of UTF-8 without whitespace/control."""
    if not isinstance(name, str):
        raise ChannelError("channel must be a string")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise ChannelError("channel is not valid UTF-8") from None
    if size == 0:
        raise ChannelError("channel must not be empty")
    if size > MAX_CHANNEL_BYTES:
        raise ChannelError(f"channel is {size} bytes, more than {MAX_CHANNEL_BYTES}")
    for ch in name:
        if ch.isspace() or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ChannelError(f"channel contains whitespace or a control character ({ch!r})")


def channel_token(name: str) -> str:
    """The subject token of a valid channel name. Raises ChannelError for an invalid one."""
    validate_channel(name)
    return "".join([_PIECE[b] for b in name.encode("utf-8")])


def token_channel(token: str) -> str:
    """The channel name of a token made by :func:`channel_token`. Raises ChannelError."""
    out = bytearray()
    i, n = 0, len(token)
    while i < n:
        c = token[i]
        if c == "~":
            b = _UNHEX.get(token[i + 1 : i + 3])
            if b is None or b in _PLAIN:
                raise ChannelError("not a channel token: bad escape")
            out.append(b)
            i += 3
            continue
        b = ord(c)
        if b > 127 or b not in _PLAIN:
            raise ChannelError("not a channel token: unexpected character")
        out.append(b)
        i += 1
    try:
        name = out.decode("utf-8")
    except UnicodeDecodeError:
        raise ChannelError("not a channel token: not UTF-8") from None
    validate_channel(name)
    return name
