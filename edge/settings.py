"""An edge node's settings: one frozen object, built once from the CLI and environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge.limits import Limits
from mesh.settings import MeshSettings


@dataclass(frozen=True)
class DrainSettings:
    # How long clients get to take their `disconnect` and close before being cut.
    close_grace_s: float = 2.0
    # How long a SIGTERM drain waits for connections to go before the process exits.
    timeout_s: float = 10.0
    # `retry_after_ms` in the `disconnect` frames the edge sends.
    retry_after_ms: int = 500


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EdgeSettings:
        """Defaults with ``EDGEMESH_<LIMIT>`` overrides (see :class:`Limits`) and
        ``EDGEMESH_MESH_<FIELD>`` ones (see :class:`MeshSettings`). Raises ValueError."""
        env = os.environ if env is None else env
        try:
            heartbeat = float(env.get("EDGEMESH_HEARTBEAT_INTERVAL_S", "15"))
        except ValueError:
            raise ValueError("EDGEMESH_HEARTBEAT_INTERVAL_S: not a number") from None
        return cls(
            limits=Limits.from_env(env),
            mesh=MeshSettings.from_env(env),
            heartbeat_interval_s=heartbeat,
        )
