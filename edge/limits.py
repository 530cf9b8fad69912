"""Per-connection and per-edge limits, and the token bucket that enforces rates. Pure.

Every limit is a field of :class:`Limits` with a default; an operator changes one
with the environment variable ``EDGEMESH_<FIELD>`` (e.g. ``EDGEMESH_MAX_MESSAGE_BYTES``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    # Bytes of a publish's `data` (its JSON text); over it: nack 41300.
    max_message_bytes: int = 64 * 1024
    # Bytes of one client frame; over it: error 41300 and close 4009.
    max_frame_bytes: int = 64 * 1024 + 16 * 1024
    # Sustained publishes per second per connection, and the burst allowed above it.
    publish_rate_per_s: float = 500.0
    publish_burst: int = 1000
    # Refused publishes tolerated per `rate_strike_window_s` before the connection is
    # closed with 4008: a client that keeps going over its rate is cut off.
    rate_strikes: int = 100
    rate_strike_window_s: float = 10.0
    max_channels_per_connection: int = 100
    max_connections: int = 10_000
    # Bytes waiting in a connection's transport write buffer before it is cut off as a
    # slow consumer (it can resume from its cursors elsewhere).
    max_send_buffer_bytes: int = 1024 * 1024
    # Longest token life `POST /v1/tokens` mints.
    max_token_ttl_s: int = 7 * 24 * 3600
    # Bytes of a publish's `name`, of its `message_id`, and of a frame's string `id`;
    # over them: 40000 (a nack for a publish).
    max_name_bytes: int = 200
    max_message_id_bytes: int = 128
    max_request_id_bytes: int = 128

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"{f.name} must be positive, got {value!r}")
        if self.max_frame_bytes < self.max_message_bytes:
            raise ValueError("max_frame_bytes must be at least max_message_bytes")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """Defaults, overridden by ``EDGEMESH_<FIELD>`` variables. Raises ValueError."""
        values: dict[str, int | float] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"EDGEMESH_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = float(raw) if f.type == "float" else int(raw)
            except ValueError:
                raise ValueError(f"EDGEMESH_{f.name.upper()}: not a number: {raw!r}") from None
        return cls(**values)  # type: ignore[arg-type]


class TokenBucket:
    """`rate` tokens per second up to `burst`; `take(now)` spends one if there is one.

    `now` is any monotonic time in seconds (injected: no clock here).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float) -> bool:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RateDecision:
    ALLOW = 0
    REFUSE = 1  # nack 42900
    CUT = 2  # persistent: close 4008


class PublishRateGuard:
    """A connection's publish rate and its tolerance for going over it."""

    __slots__ = ("_publishes", "_strikes")

    def __init__(self, limits: Limits, now: float) -> None:
        self._publishes = TokenBucket(limits.publish_rate_per_s, limits.publish_burst, now)
        self._strikes = TokenBucket(
            limits.rate_strikes / limits.rate_strike_window_s, limits.rate_strikes, now
        )

    def check(self, now: float) -> int:
        """A :class:`RateDecision` for one publish at `now`."""
        if self._publishes.take(now):
            return RateDecision.ALLOW
        return RateDecision.REFUSE if self._strikes.take(now) else RateDecision.CUT
