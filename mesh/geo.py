"""Great-circle distances and "nearest region first" ordering. Pure."""

from __future__ import annotations

import math
from collections.abc import Iterable

from mesh.topology import Region

EARTH_RADIUS_KM = 6371.0088


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in kilometres between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def by_distance(lat: float, lon: float, regions: Iterable[Region]) -> list[Region]:
    """Regions ordered nearest first; ties keep the given order (stable)."""
    return sorted(regions, key=lambda r: great_circle_km(lat, lon, r.latitude, r.longitude))


def fallback_order(origin: Region, regions: Iterable[Region], usable: Iterable[str]) -> list[str]:
    """Names of the usable regions other than `origin`, nearest to `origin` first."""
    ok = set(usable)
    others = [r for r in regions if r.name != origin.name and r.name in ok]
    return [r.name for r in by_distance(origin.latitude, origin.longitude, others)]
