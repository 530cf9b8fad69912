"""Typed errors of the mesh layer. Each carries the protocol error code the client sees."""

from __future__ import annotations


class MeshError(Exception):
    """Base class: ``code`` is a stable protocol error code, ``str(exc)`` the client message."""

    code = 50000

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CursorError(MeshError):
    """A corrupt, forged or foreign cursor, an unknown region in it, or a bad ``from``/limit."""

    code = 40000


class ChannelError(MeshError):
    """An invalid channel name (or subject token)."""

    code = 40001


class MeshUnavailable(MeshError):
    """NATS is disconnected or JetStream did not answer in time: retry or go elsewhere."""

    code = 50300
