"""The client's typed errors. Each carries a stable ``code``: a protocol v1 error code
(an int, from the server) or one of the client's own (a string, below). Pure."""

from __future__ import annotations

# The client's own codes: what went wrong on this side of the wire.
PENDING_FULL = "pending_full"  # `max_pending_publishes` publishes await their ack already
PUBLISH_TIMEOUT = "publish_timeout"  # no ack within `publish_timeout_s`, retries included
REQUEST_TIMEOUT = "request_timeout"  # no reply within `request_timeout_s`
CONNECTION_LOST = "connection_lost"  # the connection went before a reply (not for publishes)
NOT_CONNECTED = "not_connected"  # a request that is not retried, made while disconnected
CONNECT_TIMEOUT = "connect_timeout"  # no edge accepted the client within `connect_timeout_s`
UNAUTHORIZED = "unauthorized"  # the token was refused and there is no way to get another
CLOSED = "closed"  # the client was closed


class ClientError(Exception):
    """A failed operation. ``code`` is stable; ``message`` is for people."""

    def __init__(self, code: int | str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ServerError(ClientError):
    """The server refused the operation (`nack` or `error`); ``code`` is its int code."""

    code: int

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)


class PublishTimeout(ClientError):
    """No ack in time. The message may have been stored: publishing it again with the same
    ``message_id`` within the server's dedup window is safe (acked ``duplicate``)."""

    def __init__(self, message_id: str, after_s: float) -> None:
        super().__init__(PUBLISH_TIMEOUT, f"no ack for {message_id!r} within {after_s} s")
        self.message_id = message_id
