"""Which records answer a question about the geo-DNS zone. Pure.

The zone (``topology.dns.zone``) holds:

- the apex: SOA and NS (``ns-eu.ZONE``, ``ns-us.ZONE``, ... one per region with a
  control plane, glue at the address resolvers reach it at: its
  ``dns_public_address``, else its ``dns_host``);
- ``ns-REGION.ZONE``: A/AAAA of those addresses;
- ``edge.ZONE``: A/AAAA of the usable region nearest to the client (great-circle
  distance); a client that cannot be located gets the configured default region,
  or the usable region nearest to it;
- ``REGION.edge.ZONE``: A/AAAA of that region, whatever its state.

Everything else in the zone is NXDOMAIN; a name with no record of the asked type
is NOERROR with no answer (NODATA); both carry the SOA for negative caching
(RFC 2308). Names outside the zone are REFUSED.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from control_plane.dns.ecs import IPAddress
from control_plane.dns.message import CLASS_IN, Question, Rcode, Record, RRType, Soa
from control_plane.dns.names import Name, folded, name_from_text
from mesh.control import RegionState
from mesh.geo import by_distance
from mesh.topology import Region, Topology

Location = tuple[float, float]
Locator = Callable[[str], Location | None]
"""Client address (text form) -> (latitude, longitude), or None when unknown. Never raises."""

EDGE_LABEL = b"edge"
# SOA timers: there are no secondaries (every region serves the zone from the topology),
# so only MINIMUM (the negative-caching TTL, set to the zone TTL) matters to resolvers.
SOA_SERIAL = 1
SOA_REFRESH_S = 3600
SOA_RETRY_S = 600
SOA_EXPIRE_S = 86400

_ADDRESS_TYPES = (RRType.A, RRType.AAAA)
_META_TYPES = range(128, 256)


@dataclass(frozen=True)
class ZoneAnswer:
    rcode: Rcode
    authoritative: bool = True
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    # True when another client address could get a different answer (ECS scope > 0).
    tailored: bool = False
    # The region whose addresses were given, for logs and counters.
    region: str | None = None


@dataclass(frozen=True)
class _Node:
    """A name that exists in the zone: its records by type."""

    rrsets: dict[RRType, tuple[Record, ...]]
    tailored: bool = False
    region: str | None = None


def serves_clients(states: Mapping[str, RegionState], region: str) -> bool:
    """A region without a verdict yet is given the benefit of the doubt."""
    state = states.get(region)
    return state is None or state.serves_clients


def _addresses(region: Region) -> dict[RRType, tuple[IPAddress, ...]]:
    ips = [ipaddress.ip_address(a) for a in region.answer_addresses()]
    return {
        RRType.A: tuple(ip for ip in ips if ip.version == 4),
        RRType.AAAA: tuple(ip for ip in ips if ip.version == 6),
    }


def _glue_address(host: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: glue needs an address
    return None if ip.is_unspecified else ip


class ZonePolicy:
    """Answers for one topology. Build once; :meth:`answer` is cheap and side-effect free."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.zone: Name = name_from_text(topology.dns.zone)
        self.ttl = topology.dns.ttl_s
        self._default = topology.region(topology.default_region)
        self._regions = {r.name.encode(): r for r in topology.regions}
        self._region_addresses = {r.name: _addresses(r) for r in topology.regions}
        self._answerable = [r for r in topology.regions if r.answer_addresses()]
        self._nameservers: dict[bytes, dict[RRType, tuple[IPAddress, ...]]] = {}
        for region in topology.regions:
            if region.control_plane is None:
                continue
            glue = _glue_address(region.control_plane.advertised_dns_host)
            # The same names the Terraform dns module delegates to (NS + glue).
            label = f"ns-{region.name}".encode()
            self._nameservers[label] = {
                t: tuple(ip for ip in [glue] if ip is not None and ip.version == v)
                for t, v in ((RRType.A, 4), (RRType.AAAA, 6))
            }
        self.soa = Soa(
            mname=(next(iter(self._nameservers), b"ns"), *self.zone),
            rname=(b"hostmaster", *self.zone),
            serial=SOA_SERIAL,
            refresh=SOA_REFRESH_S,
            retry=SOA_RETRY_S,
            expire=SOA_EXPIRE_S,
            minimum=self.ttl,
        )

    def running(self, states: Mapping[str, RegionState]) -> list[Region]:
        """The regions a client may be sent to now.

        Only regions with addresses to give take part. Usable regions (healthy or
        degraded, or without a verdict yet) when there are any; otherwise all of
        them, so that the answer is never empty.
        """
        usable = [r for r in self._answerable if serves_clients(states, r.name)]
        return usable or list(self._answerable)

    def choose_region(
        self, location: Location | None, states: Mapping[str, RegionState]
    ) -> Region | None:
        """The region for a client at ``location``: the nearest of :meth:`running`.

        An unknown location means the default region, or the running region nearest
        to it. None when no region has any address.
        """
        return self._nearest(location, self.running(states))

    def _nearest(self, location: Location | None, running: list[Region]) -> Region | None:
        if not running:
            return None
        lat, lon = location or (self._default.latitude, self._default.longitude)
        return by_distance(lat, lon, running)[0]

    def answer(
        self,
        question: Question,
        client: str,
        states: Mapping[str, RegionState],
        locator: Locator,
    ) -> ZoneAnswer:
        """Answer ``question`` for a client at address ``client`` (ECS or resolver address)."""
        qname = folded(question.name)
        zlen = len(self.zone)
        if question.qclass != CLASS_IN or len(qname) < zlen or qname[-zlen:] != self.zone:
            return ZoneAnswer(Rcode.REFUSED, authoritative=False)
        if question.qtype in (RRType.AXFR, RRType.IXFR):
            return ZoneAnswer(Rcode.REFUSED, authoritative=False)  # no zone transfers
        if question.qtype in _META_TYPES and question.qtype != RRType.ANY:
            return ZoneAnswer(Rcode.NOTIMP, authoritative=False)
        node = self._node(qname[: len(qname) - zlen], question, client, states, locator)
        if node is None:
            return ZoneAnswer(Rcode.NXDOMAIN, authority=(self._soa_record(),))
        if question.qtype == RRType.ANY:
            found = tuple(rec for rrset in node.rrsets.values() for rec in rrset)
        else:
            found = next((v for k, v in node.rrsets.items() if k == question.qtype), ())
        if not found:
            return ZoneAnswer(
                Rcode.NOERROR,
                authority=(self._soa_record(),),
                tailored=node.tailored,
                region=node.region,
            )
        has_ns = any(rec.rtype == RRType.NS for rec in found)
        return ZoneAnswer(
            Rcode.NOERROR,
            answer=found,
            additional=self._glue() if has_ns else (),
            tailored=node.tailored,
            region=node.region,
        )

    def _node(
        self,
        relative: Name,
        question: Question,
        client: str,
        states: Mapping[str, RegionState],
        locator: Locator,
    ) -> _Node | None:
        """The records of the name ``relative`` to the zone apex; None: no such name."""
        owner = question.name
        if relative == ():
            ns = tuple(
                Record(owner, RRType.NS, self.ttl, (label, *self.zone))
                for label in self._nameservers
            )
            soa = (Record(owner, RRType.SOA, self.ttl, self.soa),)
            return _Node({RRType.SOA: soa, RRType.NS: ns} if ns else {RRType.SOA: soa})
        if relative == (EDGE_LABEL,):
            running = self.running(states)
            region = self._nearest(locator(client), running)
            return _Node(
                self._address_rrsets(owner, region),
                tailored=self._varies(question.qtype, running),
                region=region.name if region else None,
            )
        if len(relative) == 2 and relative[1] == EDGE_LABEL and relative[0] in self._regions:
            region = self._regions[relative[0]]
            return _Node(self._address_rrsets(owner, region), region=region.name)
        if len(relative) == 1 and relative[0] in self._nameservers:
            return _Node(self._records(owner, self._nameservers[relative[0]]))
        return None

    def _varies(self, qtype: int, running: list[Region]) -> bool:
        """Whether clients elsewhere could get other records of ``qtype`` (the ECS scope)."""
        if qtype == RRType.ANY:
            types: tuple[RRType, ...] = _ADDRESS_TYPES
        else:
            types = tuple(t for t in _ADDRESS_TYPES if t == qtype)
        answers = {tuple(self._region_addresses[r.name][t] for t in types) for r in running}
        return len(answers) > 1

    def _soa_record(self) -> Record:
        return Record(self.zone, RRType.SOA, self.ttl, self.soa)

    def _glue(self) -> tuple[Record, ...]:
        return tuple(
            rec
            for label, addresses in self._nameservers.items()
            for rrset in self._records((label, *self.zone), addresses).values()
            for rec in rrset
        )

    def _address_rrsets(
        self, owner: Name, region: Region | None
    ) -> dict[RRType, tuple[Record, ...]]:
        if region is None:
            return {}
        return self._records(owner, self._region_addresses[region.name])

    def _records(
        self,
        owner: Name,
        addresses: Mapping[RRType, tuple[IPAddress, ...]],
    ) -> dict[RRType, tuple[Record, ...]]:
        return {
            rtype: tuple(Record(owner, rtype, self.ttl, ip) for ip in ips)
            for rtype, ips in addresses.items()
            if ips
        }
