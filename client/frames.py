"""Protocol v1 frames as the client sees them: typed, converted once from JSON. Pure.

Unknown fields are ignored (the protocol may add optional ones); a frame without a
field the protocol requires raises :class:`ValueError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{doc.get('type')!r} frame without a string {key!r}")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    return value if isinstance(value, str) else None


def _regions(doc: Mapping[str, Any]) -> tuple[str, ...]:
    value = doc.get("fallback_regions") or []
    return tuple(r for r in value if isinstance(r, str)) if isinstance(value, list) else ()


@dataclass(frozen=True)
class Message:
    channel: str
    id: str
    name: str | None
    data: Any
    client_id: str | None
    region: str
    serial: str
    cursor: str
    timestamp: int

    @classmethod
    def from_frame(cls, doc: Mapping[str, Any]) -> Message:
        ts = doc.get("timestamp")
        return cls(
            channel=_str(doc, "channel"),
            id=_str(doc, "id"),
            name=_opt_str(doc, "name"),
            data=doc.get("data"),
            client_id=_opt_str(doc, "client_id"),
            region=_str(doc, "region"),
            serial=_str(doc, "serial"),
            cursor=_str(doc, "cursor"),
            timestamp=ts if isinstance(ts, int) else 0,
        )


@dataclass(frozen=True)
class Ack:
    serial: str
    message_id: str
    duplicate: bool

    @classmethod
    def from_frame(cls, doc: Mapping[str, Any]) -> Ack:
        return cls(_str(doc, "serial"), _str(doc, "message_id"), doc.get("duplicate") is True)


@dataclass(frozen=True)
class Connected:
    connection_id: str
    client_id: str
    region: str
    edge: str
    max_message_bytes: int
    heartbeat_interval_s: float
    fallback_regions: tuple[str, ...]

    @classmethod
    def from_frame(cls, doc: Mapping[str, Any]) -> Connected:
        return cls(
            connection_id=_str(doc, "connection_id"),
            client_id=_str(doc, "client_id"),
            region=_str(doc, "region"),
            edge=_str(doc, "edge"),
            max_message_bytes=int(doc.get("max_message_bytes") or 0),
            heartbeat_interval_s=float(doc.get("heartbeat_interval_s") or 0),
            fallback_regions=_regions(doc),
        )


@dataclass(frozen=True)
class Disconnect:
    reason: str
    reconnect: bool
    retry_after_s: float
    fallback_regions: tuple[str, ...]

    @classmethod
    def from_frame(cls, doc: Mapping[str, Any]) -> Disconnect:
        after = doc.get("retry_after_ms")
        return cls(
            reason=_str(doc, "reason"),
            reconnect=doc.get("reconnect") is not False,
            retry_after_s=after / 1000 if isinstance(after, int | float) and after > 0 else 0.0,
            fallback_regions=_regions(doc),
        )


@dataclass(frozen=True)
class HistoryPage:
    channel: str
    messages: tuple[Message, ...]
    cursor: str

    @classmethod
    def from_frame(cls, doc: Mapping[str, Any]) -> HistoryPage:
        items = doc.get("messages")
        if not isinstance(items, list):
            raise ValueError("'history_page' frame without a list 'messages'")
        return cls(
            _str(doc, "channel"), tuple(Message.from_frame(m) for m in items), _str(doc, "cursor")
        )


def error_of(doc: Mapping[str, Any]) -> tuple[int, str]:
    """The (code, message) of a `nack` or `error` frame (50000 when it has none)."""
    err = doc.get("error")
    if isinstance(err, Mapping):
        code, message = err.get("code"), err.get("message")
        return (code if isinstance(code, int) else 50000, str(message or ""))
    return 50000, "error frame without an error"
