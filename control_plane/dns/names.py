"""Domain names on the wire (RFC 1035 section 3.1 and 4.1.4). Pure.

A name is a tuple of raw labels without the root label: ``(b"edge", b"example", b"com")``.
Labels keep the case they arrived in (resolvers randomise it, RFC 5452 "0x20"), so
answers can echo the question exactly; comparisons use :func:`folded`.
"""

from __future__ import annotations

from typing import TypeAlias

from control_plane.dns.errors import WireFormatError

Name: TypeAlias = tuple[bytes, ...]

MAX_NAME_WIRE = 255  # RFC 1035: a name is at most 255 octets on the wire, root included
MAX_LABEL = 63
_MAX_POINTERS = 127  # more jumps than a legal name could ever need


def name_from_text(text: str) -> Name:
    """``"Edge.Example.com."`` -> ``(b"Edge", b"Example", b"com")``. ASCII labels only."""
    text = text.rstrip(".")
    if not text:
        return ()
    labels = tuple(label.encode("ascii") for label in text.split("."))
    if any(not 0 < len(label) <= MAX_LABEL for label in labels) or wire_length(labels) > 255:
        raise ValueError(f"not a valid DNS name: {text!r}")
    return labels


def name_to_text(name: Name) -> str:
    """Presentation form for logs (not escaped: logs only)."""
    return ".".join(label.decode("ascii", "replace") for label in name) + "."


def folded(name: Name) -> Name:
    """The name with ASCII letters in lower case: DNS names compare case-insensitively."""
    return tuple(label.lower() for label in name)


def wire_length(name: Name) -> int:
    return sum(len(label) + 1 for label in name) + 1


def read_name(buf: bytes, offset: int) -> tuple[Name, int]:
    """Decode the name at ``offset``, following compression pointers.

    Returns the name and the offset just past it in the original position. A pointer
    must point strictly backwards and the result must fit 255 octets, so a crafted
    message cannot loop. Raises :class:`WireFormatError`.
    """
    labels: list[bytes] = []
    length = 1
    end: int | None = None
    jumps = 0
    pos = offset
    while True:
        if pos >= len(buf):
            raise WireFormatError("dns.truncated", "name runs past the end of the message")
        size = buf[pos]
        kind = size & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(buf):
                raise WireFormatError("dns.truncated", "compression pointer cut short")
            target = ((size & 0x3F) << 8) | buf[pos + 1]
            jumps += 1
            if target >= pos or jumps > _MAX_POINTERS:
                raise WireFormatError("dns.bad_name", "compression pointer does not point back")
            if end is None:
                end = pos + 2
            pos = target
            continue
        if kind != 0:
            raise WireFormatError("dns.bad_name", f"unsupported label type 0x{kind:02x}")
        if size == 0:
            return tuple(labels), (end if end is not None else pos + 1)
        if pos + 1 + size > len(buf):
            raise WireFormatError("dns.truncated", "label runs past the end of the message")
        length += size + 1
        if length > MAX_NAME_WIRE:
            raise WireFormatError("dns.bad_name", "name longer than 255 octets")
        labels.append(bytes(buf[pos + 1 : pos + 1 + size]))
        pos += 1 + size


class NameWriter:
    """Appends names to a message buffer, compressing against names already written."""

    def __init__(self, buf: bytearray, compress: bool) -> None:
        self.buf = buf
        self.compress = compress
        self._offsets: dict[Name, int] = {}

    def write(self, name: Name) -> None:
        for i in range(len(name)):
            suffix = name[i:]
            if self.compress:
                at = self._offsets.get(suffix)
                if at is not None:
                    self.buf += (0xC000 | at).to_bytes(2, "big")
                    return
                if len(self.buf) < 0x4000:  # a pointer has 14 bits
                    self._offsets[suffix] = len(self.buf)
            label = name[i]
            self.buf.append(len(label))
            self.buf += label
        self.buf.append(0)
