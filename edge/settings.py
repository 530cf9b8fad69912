"""An edge node's settings: one frozen object, built once from the CLI and environment."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from edge.limits import Limits
from mesh.settings import MeshSettings

# uvicorn's 0.1 s ticks (one to start the drain, one to see it done), its 0.1 s pause
# before shutting connections, and the interpreter's exit.
EXIT_SLACK_S = 1.0


@dataclass(frozen=True)
class DrainSettings:
    """What a SIGTERM drain may take; each phase has its own limit (see docs/edge.md).

    ``EDGEMESH_DRAIN_<FIELD>`` overrides a field (e.g. ``EDGEMESH_DRAIN_TIMEOUT_S=5``).
    """

    # How long clients get to take their `disconnect` and close before being cut; after
    # the drain, also how long uvicorn waits for connections and requests to end.
    close_grace_s: float = 2.0
    # The drain itself: pending acks answered, every client told to go, connections gone.
    timeout_s: float = 10.0
    # Closing the mesh and NATS once the server has stopped.
    stop_timeout_s: float = 5.0
    # `retry_after_ms` in the `disconnect` frames the edge sends.
    retry_after_ms: int = 500

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"drain {f.name} must be a positive number, not {value!r}")

    @property
    def exit_within_s(self) -> float:
        """The longest a SIGTERM may take to end the process (each phase at its limit).
        A process still running then exits at once with :data:`OVERRUN_EXIT_CODE`."""
        return self.timeout_s + math.ceil(self.close_grace_s) + self.stop_timeout_s + EXIT_SLACK_S

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DrainSettings:
        """Defaults overridden by ``EDGEMESH_DRAIN_<FIELD>``. Raises ValueError."""
        values: dict[str, float | int] = {}
        for f in fields(cls):
            var = f"EDGEMESH_DRAIN_{f.name.upper()}"
            raw = env.get(var)
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.name == "retry_after_ms" else float(raw)
            except ValueError:
                raise ValueError(f"{var}: not a number: {raw!r}") from None
        try:
            return cls(**values)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"EDGEMESH_DRAIN_*: {exc}") from None


# The exit code of a process whose SIGTERM shutdown overran `exit_within_s`.
OVERRUN_EXIT_CODE = 70


# The keepalive interval's bounds: not under the ping grid's step (edge.wsprotocol),
# and often enough that a dead peer is noticed within the hour.
HEARTBEAT_RANGE_S = (1.0, 3600.0)


@dataclass(frozen=True)
class EdgeSettings:
    limits: Limits = field(default_factory=Limits)
    mesh: MeshSettings = field(default_factory=MeshSettings)
    drain: DrainSettings = field(default_factory=DrainSettings)
    # Advertised in `connected`; the edge pings at this interval and cuts a client that
    # does not answer within another interval.
    heartbeat_interval_s: float = 15.0
    # How long a `/readyz` answer is reused (it asks JetStream).
    readiness_cache_s: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = HEARTBEAT_RANGE_S
        if not lo <= self.heartbeat_interval_s <= hi:  # NaN fails too
            raise ValueError(
                f"EDGEMESH_HEARTBEAT_INTERVAL_S: must be {lo:g}..{hi:g} seconds "
                f"(pings go out on a 1 s grid), not {self.heartbeat_interval_s}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdgeSettings:
        """Defaults with ``EDGEMESH_<LIMIT>`` overrides (see :class:`Limits`),
        ``EDGEMESH_MESH_<FIELD>`` ones (see :class:`MeshSettings`) and
        ``EDGEMESH_DRAIN_<FIELD>`` ones (see :class:`DrainSettings`). Raises ValueError."""
        env = os.environ if env is None else env
        try:
            heartbeat = float(env.get("EDGEMESH_HEARTBEAT_INTERVAL_S", "15"))
        except ValueError:
            raise ValueError("EDGEMESH_HEARTBEAT_INTERVAL_S: not a number") from None
        return cls(
            limits=Limits.from_env(env),
            mesh=MeshSettings.from_env(env),
            drain=DrainSettings.from_env(env),
            heartbeat_interval_s=heartbeat,
        )
