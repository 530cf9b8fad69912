"""The operator API's documents, built from an instance's state. Pure functions of data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from control_plane.classify import PUBLISH, READYZ, WEBSOCKET
from control_plane.drains import DrainRecord
from control_plane.observation import CheckResult, ObserverReport
from control_plane.policy import Verdict
from mesh.topology import Region

_EDGE_CHECKS = (READYZ, WEBSOCKET, PUBLISH)


def checks_summary(checks: Iterable[CheckResult]) -> dict[str, Any]:
    """Per kind of check: whether all passed, and the failures with their details."""
    out: dict[str, dict[str, Any]] = {}
    for c in checks:
        entry = out.setdefault(c.check, {"ok": True, "failed": {}})
        if not c.ok:
            entry["ok"] = False
            entry["failed"][c.target] = c.detail
    return out


def edges_summary(region: Region, checks: Iterable[CheckResult] | None) -> list[dict[str, Any]]:
    """Each edge of `region` and whether its last probes passed (None: not probed yet)."""
    by_edge: dict[str, bool] = {}
    for c in checks or ():
        if c.check in _EDGE_CHECKS:
            by_edge[c.target] = by_edge.get(c.target, True) and c.ok
    return [
        {"name": e.name, "url": e.url, "healthy": by_edge.get(e.name) if checks else None}
        for e in region.edges
    ]


def region_summary(region: Region, verdict: Verdict, own: ObserverReport | None) -> dict[str, Any]:
    mine = own.regions.get(region.name) if own is not None else None
    return {
        "name": region.name,
        "state": verdict.state.value,
        "since": verdict.since_ms,
        "edges": edges_summary(region, mine.checks if mine else None),
        "checks": checks_summary(mine.checks) if mine else {},
        "observed": (
            {"status": mine.status.value, "reasons": list(mine.reasons)} if mine else None
        ),
    }


def region_detail(
    region: Region,
    verdict: Verdict,
    reports: Mapping[str, ObserverReport],
    own_observer: str,
    recent: Iterable[dict[str, Any]],
    drain: DrainRecord | None,
    now_ms: int,
) -> dict[str, Any]:
    doc = region_summary(region, verdict, reports.get(own_observer))
    observers: dict[str, Any] = {}
    for name, rep in sorted(reports.items()):
        rr = rep.regions.get(region.name)
        if rr is None:
            continue
        observers[name] = {
            "status": rr.status.value,
            "fail_streak": rr.fail_streak,
            "ok_streak": rr.ok_streak,
            "reasons": list(rr.reasons),
            "age_ms": now_ms - rep.ts_ms,
            "round": rep.round,
        }
    doc.update(
        {
            "required": verdict.required,
            "votes": [v.to_dict() for v in verdict.votes],
            "observers": observers,
            "recent": list(recent),
            "drain": drain.to_dict() if drain else None,
        }
    )
    return doc
