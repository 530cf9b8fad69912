"""Manual drains as a set of last-writer-wins registers, one per region. Pure.

An operator's drain or restore, sent to any instance, becomes a `DrainRecord` stamped
with that instance's clock and name. Every instance merges every record it hears of
(in the reports of the others, or read back from its own region's KV bucket at start)
and keeps the newest per region, ordered by ``(ts_ms, by)``. Merging is commutative,
associative and idempotent, so all instances converge on the same drains whatever the
order of delivery, and no single instance or region holds the only copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DrainRecord:
    region: str
    drained: bool
    ts_ms: int
    by: str
    """The instance that accepted the operator's request."""

    def newer_than(self, other: DrainRecord) -> bool:
        return (self.ts_ms, self.by, self.drained) > (other.ts_ms, other.by, other.drained)

    def to_dict(self) -> dict[str, Any]:
        return {"region": self.region, "drained": self.drained, "ts_ms": self.ts_ms, "by": self.by}

    @classmethod
    def from_dict(cls, d: Any) -> DrainRecord:
        return cls(
            region=str(d["region"]),
            drained=bool(d["drained"]),
            ts_ms=int(d["ts_ms"]),
            by=str(d["by"]),
        )


class DrainBook:
    """The newest drain record per region."""

    def __init__(self, records: tuple[DrainRecord, ...] = ()) -> None:
        self._records: dict[str, DrainRecord] = {}
        for r in records:
            self.merge(r)

    def merge(self, record: DrainRecord) -> bool:
        """Keep `record` if it is newer than what is known for its region. True if it changed."""
        current = self._records.get(record.region)
        if current is not None and not record.newer_than(current):
            return False
        self._records[record.region] = record
        return True

    def merge_all(self, records: tuple[DrainRecord, ...]) -> bool:
        changed = False
        for r in records:
            changed = self.merge(r) or changed
        return changed

    def drained(self) -> frozenset[str]:
        return frozenset(name for name, r in self._records.items() if r.drained)

    def records(self) -> tuple[DrainRecord, ...]:
        return tuple(sorted(self._records.values(), key=lambda r: r.region))

    def get(self, region: str) -> DrainRecord | None:
        return self._records.get(region)

    def encode(self) -> bytes:
        return json.dumps([r.to_dict() for r in self.records()]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> DrainBook:
        """Raises ValueError on anything malformed."""
        try:
            return cls(tuple(DrainRecord.from_dict(d) for d in json.loads(raw)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed drain book: {exc!r}") from None
