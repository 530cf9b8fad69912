"""Where the client connects next, and how long it waits first. Pure.

The candidates are edge URLs grouped by region, nearest region first (as the control
plane's route API or the configuration lists them). A failed attempt moves on to the
next candidate, so the other edges of the same region come before other regions. A
`disconnect` that sends the client away (``SENDS_AWAY``) puts its `fallback_regions`
first, in its order, and the edge that sent it last. After a connection that worked, the
next attempt starts again from the top of the list (the nearest edge first).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# The `disconnect` reasons that mean the edge or its region is going away, or is full:
# the client then goes where `fallback_regions` says. Any other reason (slow_consumer,
# rate_limited, token_expired...) is about the connection, not the edge: the client
# reconnects as after any end, nearest edge first.
SENDS_AWAY = frozenset({"draining", "shutdown", "edge_full"})


@dataclass(frozen=True)
class RegionEdges:
    region: str  # "" when the configuration gave bare URLs
    urls: tuple[str, ...]


def from_route(doc: Mapping[str, Any]) -> list[RegionEdges]:
    """The regions of a control plane's ``GET /v1/route`` reply, nearest first."""
    out = [RegionEdges(str(doc["region"]), tuple(str(u) for u in doc["edges"]))]
    for f in doc.get("fallbacks") or []:
        out.append(RegionEdges(str(f["region"]), tuple(str(u) for u in f["edges"])))
    return [r for r in out if r.urls]


class Endpoints:
    def __init__(self, regions: Sequence[RegionEdges]) -> None:
        self._set(regions)

    def _set(self, regions: Sequence[RegionEdges]) -> None:
        self.regions = list(regions)
        self._order = [(r.region, u) for r in self.regions for u in r.urls]
        if not self._order:
            raise ValueError("no edge URL to connect to")
        self._next = 0
        self.tried_all = False  # every candidate failed since the last connection that worked

    def replace(self, regions: Sequence[RegionEdges]) -> None:
        """New candidates (a fresh route); the next attempt is the first of them."""
        self._set(regions)

    def next(self) -> tuple[str, str]:
        """The (region, url) to try now."""
        region, url = self._order[self._next]
        self._next += 1
        if self._next == len(self._order):
            self._next = 0
            self.tried_all = True
        return region, url

    def worked(self) -> None:
        """A connection was accepted: the next attempt starts from the nearest edge."""
        self._next = 0
        self.tried_all = False

    def prefer(self, regions: Sequence[str], avoid: str | None) -> None:
        """The server asked to go to `regions` (in that order); `avoid` (the url that
        sent it) goes last."""
        rank = {r: i for i, r in enumerate(regions)}
        order = sorted(
            enumerate(self._order),
            key=lambda iu: (iu[1][1] == avoid, rank.get(iu[1][0], len(rank)), iu[0]),
        )
        self._order = [c for _, c in order]
        self._next = 0
        self.tried_all = False


class Backoff:
    """Exponential backoff with full jitter: attempt n waits a uniform draw in
    [0, min(max_s, base_s * 2**n)]. ``reset()`` after a success."""

    def __init__(
        self, base_s: float, max_s: float, draw: Callable[[], float] = random.random
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._draw = draw
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.max_s, self.base_s * float(2 ** min(self._attempt, 32)))
        self._attempt += 1
        return ceiling * self._draw()

    def reset(self) -> None:
        self._attempt = 0
