"""What one instance tells the others after each probe round. Wire types only; pure.

A report carries, for every region, the observer's classification of its latest round
(`ok`, `degraded` or `failing`), its streaks of failed and good rounds, and the checks
behind it; and the observer's drain book (see :mod:`control_plane.drains`), so manual
drains spread to every instance with the reports.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from control_plane.drains import DrainRecord


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"


@dataclass(frozen=True)
class CheckResult:
    """One probe: `check` is its kind, `target` the edge or server probed."""

    check: str
    target: str
    ok: bool
    detail: str = ""
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "target": self.target,
            "ok": self.ok,
            "detail": self.detail,
            "latency_ms": round(self.latency_ms, 2),
        }

    @classmethod
    def from_dict(cls, d: Any) -> CheckResult:
        return cls(
            check=str(d["check"]),
            target=str(d["target"]),
            ok=bool(d["ok"]),
            detail=str(d.get("detail", "")),
            latency_ms=float(d.get("latency_ms", 0.0)),
        )


@dataclass(frozen=True)
class RegionReport:
    """One observer's view of one region after one round."""

    status: Status
    fail_streak: int
    ok_streak: int
    reasons: tuple[str, ...] = ()
    checks: tuple[CheckResult, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "fail_streak": self.fail_streak,
            "ok_streak": self.ok_streak,
            "reasons": list(self.reasons),
            "checks": [c.to_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: Any) -> RegionReport:
        fail, ok = int(d["fail_streak"]), int(d["ok_streak"])
        if fail < 0 or ok < 0:
            raise ValueError("streaks must be >= 0")
        return cls(
            status=Status(d["status"]),
            fail_streak=fail,
            ok_streak=ok,
            reasons=tuple(str(r) for r in d.get("reasons", ())),
            checks=tuple(CheckResult.from_dict(c) for c in d.get("checks", ())),
        )


@dataclass(frozen=True)
class ObserverReport:
    observer: str
    ts_ms: int
    round: int
    regions: dict[str, RegionReport]
    drains: tuple[DrainRecord, ...] = field(default=())

    def encode(self) -> bytes:
        return json.dumps(
            {
                "observer": self.observer,
                "ts_ms": self.ts_ms,
                "round": self.round,
                "regions": {k: v.to_dict() for k, v in self.regions.items()},
                "drains": [d.to_dict() for d in self.drains],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ObserverReport:
        """Raises ValueError on anything malformed."""
        try:
            doc: Any = json.loads(raw)
            return cls(
                observer=str(doc["observer"]),
                ts_ms=int(doc["ts_ms"]),
                round=int(doc["round"]),
                regions={
                    str(k): RegionReport.from_dict(v) for k, v in dict(doc["regions"]).items()
                },
                drains=tuple(DrainRecord.from_dict(d) for d in doc.get("drains", ())),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed observer report: {exc!r}") from None
