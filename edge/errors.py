"""Protocol v1 error codes and the typed error that carries one to the client. Pure."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    """The codes of PROTOCOL.md's table. Stable: clients switch on them."""

    BAD_REQUEST = 40000
    INVALID_CHANNEL = 40001
    UNAUTHORIZED = 40100
    TOKEN_EXPIRED = 40101
    FORBIDDEN = 40300
    TOO_LARGE = 41300
    RATE_LIMITED = 42900
    INTERNAL = 50000
    UNAVAILABLE = 50300


class CloseCode(IntEnum):
    """WebSocket close codes the edge uses when it ends a connection on purpose."""

    NORMAL = 1000
    GOING_AWAY = 1001  # this edge is shutting down
    TRY_AGAIN_LATER = 1013  # slow consumer: the client may resume from its cursors
    UNAUTHORIZED = 4001  # no valid token, or it expired
    RATE_LIMITED = 4008  # persistent rate-limit violations
    FRAME_TOO_LARGE = 4009  # a frame over the frame size limit
    REGION_UNAVAILABLE = 4503  # region draining/down, or the edge is full


class EdgeError(Exception):
    """An error that reaches the client as ``{"code": ..., "message": ...}``.

    ``close`` is set when the error also ends the connection (with that close code).
    """

    def __init__(self, code: ErrorCode, message: str, close: CloseCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close

    def __repr__(self) -> str:
        return f"EdgeError({self.code.value}, {self.message!r})"

    def as_dict(self) -> dict[str, object]:
        return {"code": int(self.code), "message": self.message}


def unauthorized(message: str) -> EdgeError:
    return EdgeError(ErrorCode.UNAUTHORIZED, message, CloseCode.UNAUTHORIZED)


def token_expired(message: str = "token expired") -> EdgeError:
    return EdgeError(ErrorCode.TOKEN_EXPIRED, message, CloseCode.UNAUTHORIZED)


def bad_request(message: str) -> EdgeError:
    return EdgeError(ErrorCode.BAD_REQUEST, message)


def mesh_code(exc: Exception) -> ErrorCode:
    """The protocol code of a mesh error (its ``code``), INTERNAL for anything else."""
    try:
        return ErrorCode(getattr(exc, "code", ErrorCode.INTERNAL))
    except ValueError:
        return ErrorCode.INTERNAL
