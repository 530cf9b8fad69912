"""Control-plane settings: small frozen dataclasses, nested by concern, built once.

Precedence: defaults < environment (``EDGEMESH_CP_<NAME>``) < command line
(``--<name>``). The defaults are for development: failover in a few seconds.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.errors import SettingsError

# How long stopping waits for each group of background tasks to end (they are cancelled
# again and again meanwhile: see mesh.cancellation).
STOP_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ProbeSettings:
    interval_s: float = 1.0
    """One probe round of every region per interval."""
    timeout_s: float = 0.8
    """Each single probe (HTTP, WebSocket, synthetic publish) gives up after this."""
    mirror_stale_s: float = 10.0
    """A mirror whose last contact with its origin is older than this marks the origin degraded."""


@dataclass(frozen=True)
class PolicySettings:
    down_after: int = 3
    """An observer votes a region down after this many failed rounds in a row."""
    up_after: int = 6
    """...and votes it back up after this many good rounds in a row."""
    observation_ttl_s: float = 5.0
    """Observations older than this are ignored (their observer is gone or cut off)."""
    min_observers: int = 2
    """Agreeing observers outside a region needed to change its state, where that many exist."""
    hold_down_window_s: float = 60.0
    hold_down_max_changes: int = 4
    """After this many automatic changes within the window a region can get worse, not better."""


@dataclass(frozen=True)
class ControlPlaneSettings:
    probe: ProbeSettings = ProbeSettings()
    policy: PolicySettings = PolicySettings()
    announce_interval_s: float = 3.0
    """Region states are published on every change and at least this often."""
    events_kept: int = 500
    recent_rounds_kept: int = 20

    def validate(self) -> ControlPlaneSettings:
        """Return self, or raise SettingsError naming the first bad setting."""
        p, q = self.probe, self.policy
        checks: list[tuple[bool, str]] = [
            (0.05 <= p.interval_s <= 3600, "probe-interval-s must be within 0.05..3600"),
            (0.01 <= p.timeout_s <= p.interval_s, "probe-timeout-s must be 0.01..probe-interval-s"),
            (p.mirror_stale_s > 0, "mirror-stale-s must be > 0"),
            (1 <= q.down_after <= 1000, "down-after must be within 1..1000"),
            (1 <= q.up_after <= 1000, "up-after must be within 1..1000"),
            (
                q.observation_ttl_s > p.interval_s,
                "observation-ttl-s must be greater than probe-interval-s",
            ),
            (1 <= q.min_observers <= 100, "min-observers must be within 1..100"),
            (q.hold_down_window_s >= 0, "hold-down-window-s must be >= 0"),
            (1 <= q.hold_down_max_changes <= 1000, "hold-down-max-changes must be 1..1000"),
            (0.1 <= self.announce_interval_s <= 3600, "announce-interval-s must be 0.1..3600"),
            (1 <= self.events_kept <= 100_000, "events-kept must be within 1..100000"),
            (1 <= self.recent_rounds_kept <= 10_000, "recent-rounds-kept must be 1..10000"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self


# Every setting by its CLI/env name: (section or "" for the top level, field name).
FIELDS: dict[str, tuple[str, str]] = {
    "probe-interval-s": ("probe", "interval_s"),
    "probe-timeout-s": ("probe", "timeout_s"),
    "mirror-stale-s": ("probe", "mirror_stale_s"),
    "down-after": ("policy", "down_after"),
    "up-after": ("policy", "up_after"),
    "observation-ttl-s": ("policy", "observation_ttl_s"),
    "min-observers": ("policy", "min_observers"),
    "hold-down-window-s": ("policy", "hold_down_window_s"),
    "hold-down-max-changes": ("policy", "hold_down_max_changes"),
    "announce-interval-s": ("", "announce_interval_s"),
    "events-kept": ("", "events_kept"),
    "recent-rounds-kept": ("", "recent_rounds_kept"),
}


def env_name(name: str) -> str:
    return "EDGEMESH_CP_" + name.upper().replace("-", "_")


def _convert(name: str, kind: type, raw: str) -> Any:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a valid {kind.__name__}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{name}: must be a finite number")
    return value


def build_settings(
    overrides: Mapping[str, str | None], env: Mapping[str, str] | None = None
) -> ControlPlaneSettings:
    """Settings from the environment and `overrides` (CLI name -> text; None means unset).

    Raises SettingsError for an unknown name, an unparseable value or a value out of range.
    """
    environ = os.environ if env is None else env
    values: dict[str, str] = {}
    for name in FIELDS:
        if env_name(name) in environ:
            values[name] = environ[env_name(name)]
    for name, raw in overrides.items():
        if name not in FIELDS:
            raise SettingsError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = raw
    base = ControlPlaneSettings()
    sections: dict[str, dict[str, Any]] = {"probe": {}, "policy": {}, "": {}}
    for name, raw in values.items():
        section, field = FIELDS[name]
        holder = getattr(base, section) if section else base
        kind = type(getattr(holder, field))
        sections[section][field] = _convert(name, kind, raw)
    return dataclasses.replace(
        base,
        probe=dataclasses.replace(base.probe, **sections["probe"]),
        policy=dataclasses.replace(base.policy, **sections["policy"]),
        **sections[""],
    ).validate()
