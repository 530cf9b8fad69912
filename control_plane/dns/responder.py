"""Bytes in, bytes out: one DNS query to one response. Pure apart from logging.

The socket server hands every message here with the sender's address, the
current region states and the locator; this module decides what goes back
(or that nothing does) and never raises.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from control_plane.dns.message import (
    CD,
    MAX_MESSAGE,
    MAX_UDP_PLAIN,
    RD,
    TC,
    Edns,
    Query,
    QueryError,
    Rcode,
    Response,
    ResponseEdns,
    encode_response,
    parse_query,
)
from control_plane.dns.policy import Locator, ZonePolicy
from control_plane.dns.settings import DnsSettings
from mesh.control import RegionState
from mesh.topology import Topology

log = logging.getLogger("edgemesh.dns")


@dataclass(frozen=True)
class Reply:
    """What to send back (``wire`` None: nothing) and what happened, for counters."""

    wire: bytes | None
    rcode: Rcode | None
    problem: str | None = None  # stable code of what was wrong with the query
    truncated: bool = False
    region: str | None = None


def client_address(source: str) -> str:
    """The sender's address in plain form (an IPv4-mapped IPv6 address becomes IPv4)."""
    try:
        ip = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return source
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class Responder:
    def __init__(self, topology: Topology, settings: DnsSettings | None = None) -> None:
        self.settings = settings or DnsSettings()
        self.policy = ZonePolicy(topology)

    def size_limit(self, edns: Edns | None, udp: bool) -> int:
        """Largest response for this query: 512 plain UDP, the EDNS size (capped), or TCP's."""
        if not udp:
            return MAX_MESSAGE
        if edns is None:
            return MAX_UDP_PLAIN
        return max(MAX_UDP_PLAIN, min(edns.udp_size, self.settings.max_udp_payload))

    def respond(
        self,
        data: bytes,
        source: str,
        states: Mapping[str, RegionState],
        locator: Locator,
        *,
        udp: bool,
    ) -> Reply:
        """The reply to one message from ``source`` (the resolver's address)."""
        try:
            query = parse_query(data)
        except QueryError as exc:
            return self._reject(exc, udp)
        try:
            return self._answer(query, client_address(source), states, locator, udp)
        except Exception:  # a bug must cost one query, not the server
            log.exception("dns: failed to answer query id %d", query.id)
            return self._reject(
                QueryError(
                    "dns.internal_error",
                    "see the log",
                    Rcode.SERVFAIL,
                    query.header,
                    query.question,
                    query.edns,
                ),
                udp,
            )

    def _answer(
        self,
        query: Query,
        source: str,
        states: Mapping[str, RegionState],
        locator: Locator,
        udp: bool,
    ) -> Reply:
        subnet = query.edns.client_subnet if query.edns else None
        client = str(subnet.ip()) if subnet and subnet.source_prefix > 0 else source
        zone = self.policy.answer(query.question, client, states, locator)
        edns: ResponseEdns | None = None
        if query.edns is not None:
            echo = None
            if subnet is not None:
                echo = subnet.with_scope(subnet.source_prefix if zone.tailored else 0)
            edns = ResponseEdns(self.settings.max_udp_payload, query.edns.dnssec_ok, echo)
        response = Response(
            id=query.id,
            rcode=zone.rcode,
            authoritative=zone.authoritative,
            recursion_desired=bool(query.header.flags & RD),
            checking_disabled=bool(query.header.flags & CD),
            question=query.question,
            answer=zone.answer,
            authority=zone.authority,
            additional=zone.additional,
            edns=edns,
        )
        limit = self.size_limit(query.edns, udp)
        wire = encode_response(response, self.settings.compress, limit)
        truncated = bool(int.from_bytes(wire[2:4], "big") & TC)
        return Reply(wire, zone.rcode, None, truncated, zone.region)

    def _reject(self, exc: QueryError, udp: bool) -> Reply:
        if exc.rcode is None or exc.header is None:
            return Reply(None, None, exc.code)
        edns = None
        if exc.edns is not None:
            edns = ResponseEdns(self.settings.max_udp_payload, exc.edns.dnssec_ok)
        elif exc.rcode > 0xF:
            return Reply(None, None, exc.code)  # an extended rcode needs an OPT to carry it
        response = Response(
            id=exc.header.id,
            rcode=exc.rcode,
            opcode=exc.header.opcode,
            recursion_desired=bool(exc.header.flags & RD),
            checking_disabled=bool(exc.header.flags & CD),
            question=exc.question,
            edns=edns,
        )
        wire = encode_response(response, self.settings.compress, self.size_limit(exc.edns, udp))
        return Reply(wire, exc.rcode, exc.code)
