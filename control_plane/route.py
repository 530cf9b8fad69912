"""`GET /v1/route`: which region a client should use, then where to fall back. Pure.

The nearest usable region (healthy or degraded) by great-circle distance from the
client's location; the other usable regions follow, nearest to the client first. A
client that cannot be located is placed at the default region (``dns.default_region``,
else the first region), so it gets that region when usable, else the usable region
nearest to it. If no region is usable (the policy never lets that happen, but states
may come from elsewhere), every region is offered rather than none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from mesh.control import RegionState
from mesh.geo import by_distance
from mesh.topology import Region, Topology

Location = tuple[float, float]
Locator = Callable[[str], Location | None]
"""Client address (text form) -> (latitude, longitude), or None when unknown. Never raises."""


@dataclass(frozen=True)
class RouteChoice:
    region: str
    edges: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"region": self.region, "edges": list(self.edges)}


@dataclass(frozen=True)
class RouteAnswer:
    region: str
    edges: tuple[str, ...]
    fallbacks: tuple[RouteChoice, ...]
    located: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "region": self.region,
            "edges": list(self.edges),
            "fallbacks": [f.to_dict() for f in self.fallbacks],
            "located": self.located,
        }


def _choice(region: Region) -> RouteChoice:
    return RouteChoice(region.name, tuple(e.ws_url for e in region.edges))


def route(
    topology: Topology, states: Mapping[str, RegionState], location: Location | None
) -> RouteAnswer:
    """The route answer for a client at `location` (None: unknown) given region states.

    A region without a state yet is treated as usable.
    """
    usable = [
        r for r in topology.regions if (s := states.get(r.name)) is None or s.serves_clients
    ] or list(topology.regions)
    if location is None:
        home = topology.region(topology.default_region)
        ordered = by_distance(home.latitude, home.longitude, usable)
    else:
        ordered = by_distance(location[0], location[1], usable)
    first, rest = ordered[0], ordered[1:]
    return RouteAnswer(
        first.name, _choice(first).edges, tuple(_choice(r) for r in rest), location is not None
    )
