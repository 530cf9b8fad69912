"""Client frames of protocol v1: parsed and validated into typed frames. Pure.

:func:`parse_frame` turns one text frame into a :class:`ClientFrame` or raises
:class:`FrameError` (an :class:`~edge.errors.EdgeError` that also carries the
request id, when one could be read, so the `error` reply can repeat it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from edge.errors import EdgeError, ErrorCode, mesh_code
from edge.limits import Limits
from mesh.channels import validate_channel
from mesh.cursor import Start, parse_start
from mesh.errors import MeshError

RequestId = str | int | None

DEFAULT_LIMITS = Limits()
# The defaults of the settings `max_name_bytes`, `max_message_id_bytes`, `max_request_id_bytes`.
MAX_NAME_BYTES = DEFAULT_LIMITS.max_name_bytes
MAX_MESSAGE_ID_BYTES = DEFAULT_LIMITS.max_message_id_bytes
MAX_ID_BYTES = DEFAULT_LIMITS.max_request_id_bytes


class FrameError(EdgeError):
    """A bad frame. `publish` is set when the frame was a publish (the reply is a nack)."""

    def __init__(
        self, code: ErrorCode, message: str, request_id: RequestId = None, publish: bool = False
    ) -> None:
        super().__init__(code, message)
        self.request_id = request_id
        self.publish = publish


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: RequestId
    channel: str
    start: Start


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: RequestId
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    id: RequestId
    channel: str
    data: bytes  # compact JSON text of `data`
    name: str | None
    message_id: str | None


@dataclass(frozen=True, slots=True)
class History:
    id: RequestId
    channel: str
    limit: int | None  # None: not given (the edge's default page size)
    after: str | None


@dataclass(frozen=True, slots=True)
class Ping:
    id: RequestId


ClientFrame = Subscribe | Unsubscribe | Publish | History | Ping


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str | bytes) -> Any:
    """Strict JSON (no NaN/Infinity). Raises ValueError for anything else."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def encode_data(value: Any) -> bytes:
    """Compact JSON text of a decoded value (the form stored and delivered)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _request_id(doc: dict[str, Any], max_bytes: int) -> RequestId:
    rid = doc.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise FrameError(ErrorCode.BAD_REQUEST, "id must be a string or an integer")
    if isinstance(rid, str) and len(rid.encode("utf-8")) > max_bytes:
        raise FrameError(ErrorCode.BAD_REQUEST, f"id longer than {max_bytes} bytes")
    if isinstance(rid, int) and abs(rid) >= 2**53:
        raise FrameError(ErrorCode.BAD_REQUEST, "integer id beyond 2^53")
    return rid


def _channel(doc: dict[str, Any], rid: RequestId) -> str:
    channel = doc.get("channel")
    if not isinstance(channel, str):
        raise FrameError(ErrorCode.BAD_REQUEST, "channel (a string) is required", rid)
    try:
        validate_channel(channel)
    except MeshError as exc:
        raise FrameError(mesh_code(exc), str(exc), rid) from None
    return channel


def _optional_text(doc: dict[str, Any], key: str, limit: int, rid: RequestId) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or not value
        or len(value.encode("utf-8")) > limit
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    ):
        raise FrameError(
            ErrorCode.BAD_REQUEST,
            f"{key} must be a string of 1-{limit} bytes without control characters",
            rid,
        )
    return value


def check_publish_fields(
    doc: dict[str, Any],
    max_message_bytes: int,
    rid: RequestId = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[bytes, str | None, str | None]:
    """(data, name, message_id) of a publish frame or REST body; `name` and
    `message_id` are checked against `limits`. Raises FrameError."""
    if "data" not in doc:
        raise FrameError(ErrorCode.BAD_REQUEST, "data is required", rid)
    data = encode_data(doc["data"])
    if len(data) > max_message_bytes:
        raise FrameError(
            ErrorCode.TOO_LARGE,
            f"data is {len(data)} bytes, over max_message_bytes ({max_message_bytes})",
            rid,
        )
    name = _optional_text(doc, "name", limits.max_name_bytes, rid)
    message_id = _optional_text(doc, "message_id", limits.max_message_id_bytes, rid)
    return data, name, message_id


def parse_frame(
    text: str | bytes, max_message_bytes: int, max_rewind: int, limits: Limits = DEFAULT_LIMITS
) -> ClientFrame:
    """Parse and validate one client frame; the lengths of `id`, `name` and
    `message_id` are checked against `limits`. Raises FrameError (40000, 40001, 41300)."""
    try:
        doc = parse_json(text)
    except ValueError as exc:
        raise FrameError(ErrorCode.BAD_REQUEST, f"not a JSON frame: {exc}") from None
    if not isinstance(doc, dict):
        raise FrameError(ErrorCode.BAD_REQUEST, "a frame must be a JSON object")
    rid = _request_id(doc, limits.max_request_id_bytes)
    kind = doc.get("type")
    if kind == "publish":
        try:
            channel = _channel(doc, rid)
            data, name, message_id = check_publish_fields(doc, max_message_bytes, rid, limits)
        except FrameError as exc:
            exc.publish = True
            raise
        return Publish(rid, channel, data, name, message_id)
    if kind == "subscribe":
        channel = _channel(doc, rid)
        try:
            start = parse_start(doc.get("from"), max_rewind)
        except MeshError as exc:
            raise FrameError(mesh_code(exc), str(exc), rid) from None
        return Subscribe(rid, channel, start)
    if kind == "unsubscribe":
        return Unsubscribe(rid, _channel(doc, rid))
    if kind == "history":
        channel = _channel(doc, rid)
        limit = doc.get("limit")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise FrameError(ErrorCode.BAD_REQUEST, "limit must be a positive integer", rid)
        after = doc.get("after")
        if after is not None and not isinstance(after, str):
            raise FrameError(ErrorCode.BAD_REQUEST, "after must be a cursor string", rid)
        return History(rid, channel, limit, after)
    if kind == "ping":
        return Ping(rid)
    if kind is None:
        raise FrameError(ErrorCode.BAD_REQUEST, "type is required", rid)
    raise FrameError(ErrorCode.BAD_REQUEST, f"unknown frame type {str(kind)[:40]!r}", rid)
