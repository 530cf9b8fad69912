"""A small MaxMind City database for tests, written with mmdb-writer.

Clients on three continents, in the documentation address ranges (RFC 5737,
RFC 3849), so no test depends on who really owns an address::

    from tests.geoip_fixture import CLIENTS, build_city_db
    db = build_city_db(tmp_path / "city.mmdb")
    GeoIpLocator(db)(CLIENTS["paris"].address)  # -> (48.86, 2.35)

With the dev regions (eu Frankfurt, us Virginia, ap Singapore): paris and its IPv6
neighbour go to eu, chicago to us, tokyo to ap. Pass ``extra`` to place more
networks, e.g. ``{"127.0.0.0/8": MUMBAI}`` to give loopback resolvers a location.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mesh.topology import Topology, parse_topology


@dataclass(frozen=True)
class Client:
    network: str  # what the database holds
    address: str  # one address inside it
    location: tuple[float, float] | None
    nearest: str | None  # nearest dev region (eu, us, ap)


PARIS = (48.86, 2.35)
CHICAGO = (41.88, -87.63)
TOKYO = (35.68, 139.69)
MUMBAI = (19.08, 72.88)
SAO_PAULO = (-23.55, -46.63)

CLIENTS: dict[str, Client] = {
    "paris": Client("192.0.2.0/24", "192.0.2.77", PARIS, "eu"),
    "chicago": Client("198.51.100.0/24", "198.51.100.77", CHICAGO, "us"),
    "tokyo": Client("203.0.113.0/24", "203.0.113.77", TOKYO, "ap"),
    "paris6": Client("2001:db8:e0::/48", "2001:db8:e0::77", PARIS, "eu"),
    "chicago6": Client("2001:db8:a0::/48", "2001:db8:a0::77", CHICAGO, "us"),
    "tokyo6": Client("2001:db8:f0::/48", "2001:db8:f0::77", TOKYO, "ap"),
    # Known network, no coordinates (a country-level record): must count as unknown.
    "nowhere": Client("198.18.0.0/15", "198.18.0.77", None, None),
}
# Not in the database at all.
UNKNOWN_ADDRESS = "100.64.0.77"


def fixture_locator(address: str) -> tuple[float, float] | None:
    """The database's answers without the database: for pure tests of the policy."""
    ip = ipaddress.ip_address(address)
    for c in CLIENTS.values():
        if ip in ipaddress.ip_network(c.network):
            return c.location
    return None


def _record(location: tuple[float, float] | None) -> dict[str, object]:
    record: dict[str, object] = {"country": {"iso_code": "ZZ", "names": {"en": "Testland"}}}
    if location is not None:
        lat, lon = location
        record["location"] = {"latitude": lat, "longitude": lon, "accuracy_radius": 50}
        record["city"] = {"names": {"en": f"City at {lat},{lon}"}}
    return record


def build_city_db(
    path: Path,
    extra: Mapping[str, tuple[float, float] | None] | None = None,
    database_type: str = "EdgeMesh-Test-City",
) -> Path:
    """Write the database to ``path`` (an IPv6 tree holding IPv4 too) and return the path."""
    writer = MMDBWriter(
        ip_version=6,
        database_type=database_type,
        languages=["en"],
        description="edgemesh test City database",
        ipv4_compatible=True,
    )
    networks = {c.network: c.location for c in CLIENTS.values()}
    networks.update(extra or {})
    for network, location in networks.items():
        writer.insert_network(IPSet([network]), _record(location))
    writer.to_db_file(str(path))
    return path


# Distinct answer addresses per dev region, so a test can tell the regions apart
# (local_topology puts every edge on 127.0.0.1). ap has no IPv6 address on purpose.
REGION_ADDRESSES: dict[str, tuple[str, ...]] = {
    "eu": ("10.0.1.1", "10.0.1.2", "fd00:1::1"),
    "us": ("10.0.2.1", "fd00:2::1"),
    "ap": ("10.0.3.1",),
}


def geo_topology(
    topology: Topology,
    addresses: Mapping[str, tuple[str, ...]] = REGION_ADDRESSES,
    **dns: object,
) -> Topology:
    """``topology`` with ``public_addresses`` per region and ``dns`` settings replaced."""
    data = json.loads(topology.to_json())
    for region in data["regions"]:
        if region["name"] in addresses:
            region["public_addresses"] = list(addresses[region["name"]])
    data["dns"] = {**data.get("dns", {}), **dns}
    return parse_topology(data)
