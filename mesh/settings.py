"""Settings of the mesh layer: one frozen dataclass, validated once when built."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class MeshSettings:
    """Retention, dedup, timeouts and replay limits. Streams and mirrors share retention."""

    max_age_s: float = 86_400.0
    max_msgs_per_channel: int = 10_000
    duplicate_window_s: float = 120.0
    publish_timeout_s: float = 5.0
    request_timeout_s: float = 2.0
    replay_batch: int = 1000
    max_rewind: int = 1000
    max_history_limit: int = 1000
    sweep_delays_s: tuple[float, ...] = (0.05, 0.3, 1.5)
    repair_timeout_s: float = 2.0
    max_origin_reads: int = 1000
    origin_check_timeout_s: float = 0.5
    resync_concurrency: int = 32
    mirror_stale_after_s: float = 5.0
    dedup_memory: int = 10_000
    dedup_lookbehind: int = 1000
    cross_region_dedup: bool = True
    region_check_timeout_s: float = 0.5
    pending_msgs_limit: int = 65_536
    replicas: int | None = None

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and not (math.isfinite(v) and v > 0):
                problems.append(f"{f.name} must be a positive finite number, not {v}")
            elif isinstance(v, int) and not isinstance(v, bool) and v < 1:
                problems.append(f"{f.name} must be at least 1, not {v}")
        if any(not (math.isfinite(d) and d >= 0) for d in self.sweep_delays_s):
            problems.append("sweep_delays_s must be non-negative finite numbers")
        if self.replicas is not None and not 1 <= self.replicas <= 5:
            problems.append(f"replicas must be 1-5, not {self.replicas}")
        if self.duplicate_window_s > self.max_age_s:
            problems.append("duplicate_window_s must not exceed max_age_s")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MeshSettings:
        """Defaults overridden by ``EDGEMESH_MESH_<FIELD>`` variables (e.g.
        ``EDGEMESH_MESH_MAX_MSGS_PER_CHANNEL=500``; ``SWEEP_DELAYS_S`` is comma-separated).
        Raises ValueError naming the variable."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            var = f"EDGEMESH_MESH_{f.name.upper()}"
            raw = env.get(var)
            if raw is None:
                continue
            default = getattr(cls, f.name, None)
            try:
                if isinstance(default, bool):
                    values[f.name] = _flag(raw)
                elif f.name == "sweep_delays_s":
                    values[f.name] = tuple(float(x) for x in raw.split(",") if x.strip())
                elif f.name == "replicas":
                    values[f.name] = None if raw.strip() in ("", "auto") else int(raw)
                elif isinstance(default, float):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = int(raw)
            except ValueError:
                raise ValueError(f"{var}: not a valid value: {raw!r}") from None
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"EDGEMESH_MESH_*: {exc}") from None

    def replicas_for(self, servers: int) -> int:
        """Stream replicas in a region with `servers` NATS servers."""
        n = self.replicas if self.replicas is not None else 3
        return max(1, min(n, servers))


def _flag(raw: str) -> bool:
    text = raw.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)
