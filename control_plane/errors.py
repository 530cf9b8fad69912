"""Typed control-plane errors. Each carries a stable code (the PROTOCOL.md scheme) and the
HTTP status the operator API answers with."""

from __future__ import annotations


class ControlPlaneError(Exception):
    """Base class: `code` is stable and reaches the client as ``{"error": {"code": ...}}``."""

    code = 50000
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ControlPlaneError):
    code = 40000
    status = 400


class SettingsError(BadRequest):
    """A setting out of range or not parseable (from the CLI or the environment)."""


class Unauthorized(ControlPlaneError):
    """No API key given, or not in the `Bearer KEY_ID:SECRET` form."""

    code = 40100
    status = 401


class Forbidden(ControlPlaneError):
    """An API key was given but is not one of the configured keys."""

    code = 40300
    status = 403


class UnknownRegion(ControlPlaneError):
    code = 40400
    status = 404


class LastServingRegion(ControlPlaneError):
    """Draining this region would leave no region serving clients."""

    code = 40900
    status = 409


class Unavailable(ControlPlaneError):
    """The instance cannot do this now (e.g. not connected to NATS)."""

    code = 50300
    status = 503
