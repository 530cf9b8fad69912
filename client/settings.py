"""The client's limits and timeouts: one frozen dataclass, checked when built. Pure."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class ClientSettings:
    # From the call to the first `connected` of `Client.start()`.
    connect_timeout_s: float = 20.0
    # Opening one WebSocket (TCP, upgrade, the `connected` frame) before trying the next edge.
    open_timeout_s: float = 5.0
    # A subscribe, unsubscribe, history or ping waiting for its reply.
    request_timeout_s: float = 10.0
    # From `publish()` to its ack, every retry and reconnect included. Keep it under the
    # server's dedup window (2 minutes by default) so a retry is never stored twice.
    publish_timeout_s: float = 60.0
    # Publishes awaiting their ack (sent or queued while disconnected); one more is refused.
    max_pending_publishes: int = 1_000
    # Messages a subscription holds that the application has not taken. When one is full
    # the client stops reading the connection until there is room (the edge may then cut
    # it as a slow consumer: the client resumes from its cursors, nothing is lost).
    max_buffered_messages: int = 10_000
    # Between connection attempts: exponential from base to max, with full jitter.
    reconnect_base_s: float = 0.1
    reconnect_max_s: float = 5.0
    # WebSocket pings from the client: a connection that does not answer one within the
    # timeout is taken as dead and replaced.
    ping_interval_s: float = 15.0
    ping_timeout_s: float = 15.0
    # A publish the edge refused for its rate (42900) is sent again after this long.
    rate_limited_retry_s: float = 0.5
    # With route_urls, while connected outside the route's first region (after a
    # failover): how often to ask the route API whether to go back.
    route_refresh_s: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{f.name} must be a positive number, not {value!r}")
        if self.reconnect_max_s < self.reconnect_base_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) is below reconnect_base_s "
                f"({self.reconnect_base_s})"
            )
