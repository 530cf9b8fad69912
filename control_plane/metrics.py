"""`GET /metrics`: Prometheus text exposition (format 0.0.4). Pure rendering."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mesh.control import RegionState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class MetricsSnapshot:
    observer: str
    states: Mapping[str, RegionState]
    rounds: int
    round_seconds: float
    check_failures: Mapping[tuple[str, str], int]
    state_changes: Mapping[str, int]
    reports_received: Mapping[str, int]
    fresh_observers: int
    isolated_observers: frozenset[str]
    announcements: int
    nats_connected: bool


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def render(m: MetricsSnapshot) -> str:
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("edgemesh_cp_region_state", "gauge", "1 for the region's current state")
    for region, state in sorted(m.states.items()):
        for s in RegionState:
            value = 1 if s is state else 0
            out.append(f"edgemesh_cp_region_state{_labels(region=region, state=s.value)} {value}")
    family("edgemesh_cp_probe_rounds_total", "counter", "probe rounds run by this instance")
    out.append(f"edgemesh_cp_probe_rounds_total {m.rounds}")
    family("edgemesh_cp_probe_round_seconds", "gauge", "duration of the last probe round")
    out.append(f"edgemesh_cp_probe_round_seconds {m.round_seconds:.6f}")
    family("edgemesh_cp_check_failures_total", "counter", "failed probes by region and check")
    for (region, check), n in sorted(m.check_failures.items()):
        out.append(f"edgemesh_cp_check_failures_total{_labels(region=region, check=check)} {n}")
    family("edgemesh_cp_state_changes_total", "counter", "region state changes decided here")
    for region, n in sorted(m.state_changes.items()):
        out.append(f"edgemesh_cp_state_changes_total{_labels(region=region)} {n}")
    family("edgemesh_cp_reports_received_total", "counter", "reports received from observers")
    for observer, n in sorted(m.reports_received.items()):
        out.append(f"edgemesh_cp_reports_received_total{_labels(observer=observer)} {n}")
    family("edgemesh_cp_fresh_observers", "gauge", "observers with a fresh report")
    out.append(f"edgemesh_cp_fresh_observers {m.fresh_observers}")
    family("edgemesh_cp_isolated_observers", "gauge", "observers treated as isolated")
    out.append(f"edgemesh_cp_isolated_observers {len(m.isolated_observers)}")
    family("edgemesh_cp_announcements_total", "counter", "region-state announcements sent")
    out.append(f"edgemesh_cp_announcements_total {m.announcements}")
    family("edgemesh_cp_nats_connected", "gauge", "1 when this instance is connected to NATS")
    out.append(f"edgemesh_cp_nats_connected {int(m.nats_connected)}")
    return "\n".join(out) + "\n"
