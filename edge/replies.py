"""Server frames of protocol v1, encoded to the bytes written to a socket. Pure.

Every function returns a complete WebSocket text frame (see :mod:`edge.wsframe`),
except the ``*_json`` ones, which return the JSON text alone (REST bodies).
A `message` is encoded once per delivery and the same bytes go to every subscriber.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edge.errors import EdgeError
from edge.frames import RequestId
from edge.wsframe import text_frame
from mesh.message import StoredMessage


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def frame(doc: dict[str, Any]) -> bytes:
    return text_frame(_dumps(doc))


def _with_id(doc: dict[str, Any], rid: RequestId) -> dict[str, Any]:
    if rid is not None:
        doc["id"] = rid
    return doc


def message_json(msg: StoredMessage, cursor: str) -> bytes:
    """The `message` object; `data` is embedded verbatim (it is already JSON text)."""
    return b"".join(
        (
            b'{"type":"message","channel":',
            _dumps(msg.channel),
            b',"id":',
            _dumps(msg.id),
            b',"name":',
            _dumps(msg.name),
            b',"data":',
            msg.data,
            b',"client_id":',
            _dumps(msg.client_id),
            b',"region":',
            _dumps(msg.origin),
            b',"serial":',
            _dumps(msg.serial),
            b',"cursor":',
            _dumps(cursor),
            b',"timestamp":',
            str(msg.timestamp_ms).encode(),
            b"}",
        )
    )


def message_frame(msg: StoredMessage, cursor: str) -> bytes:
    """The hub's encoder: one `message` frame, ready for every subscriber's socket."""
    return text_frame(message_json(msg, cursor))


def messages_json(entries: Iterable[tuple[StoredMessage, str]], cursor: str) -> bytes:
    """``{"messages":[...],"cursor":...}``: the REST history body."""
    items = b",".join(message_json(m, c) for m, c in entries)
    return b'{"messages":[' + items + b'],"cursor":' + _dumps(cursor) + b"}"


def history_page(
    rid: RequestId, channel: str, entries: Iterable[tuple[StoredMessage, str]], cursor: str
) -> bytes:
    head = _dumps(_with_id({"type": "history_page"}, rid))[:-1]
    body = messages_json(entries, cursor)[1:]
    return text_frame(head + b',"channel":' + _dumps(channel) + b"," + body)


def connected(
    connection_id: str,
    client_id: str | None,
    region: str,
    edge: str,
    max_message_bytes: int,
    heartbeat_interval_s: float,
    fallback_regions: list[str],
) -> bytes:
    return frame(
        {
            "type": "connected",
            "connection_id": connection_id,
            "client_id": client_id,
            "region": region,
            "edge": edge,
            "max_message_bytes": max_message_bytes,
            "heartbeat_interval_s": heartbeat_interval_s,
            "fallback_regions": fallback_regions,
        }
    )


def subscribed(rid: RequestId, channel: str, cursor: str, recovered: bool | None) -> bytes:
    doc = _with_id({"type": "subscribed"}, rid)
    doc["channel"] = channel
    doc["cursor"] = cursor
    if recovered is not None:
        doc["recovered"] = recovered
    return frame(doc)


def unsubscribed(rid: RequestId, channel: str) -> bytes:
    doc = _with_id({"type": "unsubscribed"}, rid)
    doc["channel"] = channel
    return frame(doc)


def ack(rid: RequestId, serial: str, message_id: str, duplicate: bool) -> bytes:
    doc = _with_id({"type": "ack"}, rid)
    doc.update(serial=serial, message_id=message_id, duplicate=duplicate)
    return frame(doc)


def nack(rid: RequestId, error: EdgeError) -> bytes:
    doc = _with_id({"type": "nack"}, rid)
    doc["error"] = error.as_dict()
    return frame(doc)


def error(rid: RequestId, err: EdgeError) -> bytes:
    doc = _with_id({"type": "error"}, rid)
    doc["error"] = err.as_dict()
    return frame(doc)


def pong(rid: RequestId) -> bytes:
    return frame(_with_id({"type": "pong"}, rid))


def disconnect(
    reason: str, reconnect: bool, retry_after_ms: int, fallback_regions: list[str]
) -> bytes:
    return frame(
        {
            "type": "disconnect",
            "reason": reason,
            "reconnect": reconnect,
            "retry_after_ms": retry_after_ms,
            "fallback_regions": fallback_regions,
        }
    )
