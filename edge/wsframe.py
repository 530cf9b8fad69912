"""WebSocket server-to-client framing (RFC 6455 section 5.2). Pure.

The edge encodes each delivered frame once and writes the same bytes to every
subscriber's transport, so framing happens here, not in a WebSocket library.
Server frames are never masked; every frame is a single final frame (FIN set).
"""

from __future__ import annotations

import struct

_TEXT = 0x81  # FIN + opcode 1
_CLOSE = 0x88  # FIN + opcode 8
_PING = 0x89  # FIN + opcode 9
MAX_CONTROL_PAYLOAD_BYTES = 125
MAX_CLOSE_REASON_BYTES = MAX_CONTROL_PAYLOAD_BYTES - 2  # after the close code


def frame_header(opcode_byte: int, length: int) -> bytes:
    """The header of one unmasked final frame with a payload of `length` bytes."""
    if length < 126:
        return bytes((opcode_byte, length))
    if length < 65536:
        return struct.pack("!BBH", opcode_byte, 126, length)
    return struct.pack("!BBQ", opcode_byte, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A complete text frame carrying `payload` (which must be UTF-8)."""
    return frame_header(_TEXT, len(payload)) + payload


def ping_frame(payload: bytes) -> bytes:
    """A complete ping frame (a control frame: at most 125 payload bytes)."""
    if len(payload) > MAX_CONTROL_PAYLOAD_BYTES:
        raise ValueError(f"a ping payload is at most {MAX_CONTROL_PAYLOAD_BYTES} bytes")
    return bytes((_PING, len(payload))) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A complete close frame; the reason is cut to fit a control frame (on a character)."""
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CLOSE_REASON_BYTES:
        raw = raw[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore").encode("utf-8")
    payload = struct.pack("!H", code) + raw
    return frame_header(_CLOSE, len(payload)) + payload
