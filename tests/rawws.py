"""A bare WebSocket client's pieces, no library: the upgrade request, masked client
frames, and splitting server frames off a buffer. Used where a test or a benchmark
needs to see every frame (pings included) or must stay cheap on the client side."""

from __future__ import annotations

import base64
import secrets
import struct

PING, PONG, CLOSE = 0x9, 0xA, 0x8


def upgrade_request(host: str, port: int, token: str) -> bytes:
    return (
        f"GET /v1/connect?token={token} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def upgrade_response(buf: bytearray) -> bytes | None:
    """The response head, taken off `buf`, once it is all there; else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end])
    del buf[: end + 4]
    return head


def masked_frame(payload: bytes, first_byte: int = 0x81) -> bytes:
    """A client-to-server frame, text by default (clients must mask)."""
    mask = secrets.token_bytes(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first_byte, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first_byte, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first_byte, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def take_frames(buf: bytearray) -> list[tuple[int, bytes]]:
    """Every complete (unmasked, server) frame at the start of `buf`, as (opcode,
    payload), taken off it; a partial frame stays for the next call."""
    frames = []
    pos = 0
    while len(buf) - pos >= 2:
        n = buf[pos + 1] & 0x7F
        head = 2
        if n == 126:
            if len(buf) - pos < 4:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 4], "big")
            head = 4
        elif n == 127:
            if len(buf) - pos < 10:
                break
            n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            head = 10
        if len(buf) - pos < head + n:
            break
        frames.append((buf[pos] & 0x0F, bytes(buf[pos + head : pos + head + n])))
        pos += head + n
    del buf[:pos]
    return frames
