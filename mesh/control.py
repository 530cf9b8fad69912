"""What the control plane tells the data plane, over NATS. Wire types only; pure.

Every control-plane instance publishes its current verdicts on ``REGION_STATES``
whenever one changes and every few seconds. Edges keep the newest announcement
and act on their own region's state (``draining`` or ``down``: tell clients to
reconnect elsewhere, with ``fallback_regions``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

REGION_STATES = "em.ctl.regions"


class RegionState(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    DOWN = "down"
    DRAINING = "draining"

    @property
    def serves_clients(self) -> bool:
        """Whether clients may be routed to (and stay on) a region in this state."""
        return self in (RegionState.HEALTHY, RegionState.DEGRADED)


@dataclass(frozen=True)
class RegionStates:
    """One control-plane instance's verdicts at one moment."""

    observer: str
    ts_ms: int
    states: dict[str, RegionState]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "observer": self.observer,
                "ts_ms": self.ts_ms,
                "regions": {k: v.value for k, v in self.states.items()},
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> RegionStates:
        """Raises ValueError on anything malformed."""
        try:
            doc: Any = json.loads(raw)
            return cls(
                observer=str(doc["observer"]),
                ts_ms=int(doc["ts_ms"]),
                states={str(k): RegionState(v) for k, v in dict(doc["regions"]).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed region states: {exc}") from None

    def usable(self) -> list[str]:
        return [name for name, s in self.states.items() if s.serves_clients]
