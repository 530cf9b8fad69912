"""Bytes in, bytes out: ECS echo and scope, size limits, error responses. No sockets."""

from __future__ import annotations

import itertools

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from control_plane.dns.message import Edns
from control_plane.dns.policy import Location
from control_plane.dns.responder import Responder, client_address
from control_plane.dns.settings import DnsSettings, DnsSettingsError
from mesh.control import RegionState
from mesh.topology import local_topology
from tests.geoip_fixture import CLIENTS, REGION_ADDRESSES, fixture_locator, geo_topology

PORTS = itertools.count(40000)
TOPOLOGY = geo_topology(local_topology(lambda: next(PORTS)))
RESPONDER = Responder(TOPOLOGY)
PARIS, TOKYO = CLIENTS["paris"].address, CLIENTS["tokyo"].address


def query(
    name: str = "edge.edgemesh.test", qtype: str = "A", ecs: str | None = None, **kw: object
) -> dns.message.Message:
    options = [dns.edns.ECSOption.from_text(ecs)] if ecs else []
    kw.setdefault("use_edns", 0 if ecs else False)
    return dns.message.make_query(name, qtype, options=options, **kw)  # type: ignore[arg-type]


def ask(
    q: dns.message.Message,
    source: str = PARIS,
    states: dict[str, RegionState] | None = None,
    responder: Responder = RESPONDER,
    udp: bool = True,
) -> dns.message.Message:
    reply = responder.respond(q.to_wire(), source, states or {}, fixture_locator, udp=udp)
    assert reply.wire is not None
    response = dns.message.from_wire(reply.wire)
    assert q.is_response(response)  # id, question and QR, as a resolver checks them
    return response


def wire_size(responder: Responder, q: dns.message.Message, udp: bool = True) -> int:
    reply = responder.respond(q.to_wire(), PARIS, {}, fixture_locator, udp=udp)
    assert reply.wire is not None
    return len(reply.wire)


def a_records(m: dns.message.Message) -> set[str]:
    return {rd.address for rrset in m.answer for rd in rrset}


def ecs_of(m: dns.message.Message) -> dns.edns.ECSOption:
    (opt,) = [o for o in m.options if isinstance(o, dns.edns.ECSOption)]
    return opt


def test_the_client_subnet_locates_the_client_not_the_resolver() -> None:
    m = ask(query(ecs="203.0.113.0/24"), source=PARIS)
    assert a_records(m) == set(REGION_ADDRESSES["ap"])
    opt = ecs_of(m)
    assert (opt.family, opt.address, opt.srclen, opt.scopelen) == (1, "203.0.113.0", 24, 24)


def test_ipv6_client_subnet_is_echoed_with_its_family() -> None:
    m = ask(query(ecs="2001:db8:e0::/48"), source=TOKYO)
    assert a_records(m) == {"10.0.1.1", "10.0.1.2"}
    opt = ecs_of(m)
    assert (opt.family, opt.address, opt.srclen, opt.scopelen) == (2, "2001:db8:e0::", 48, 48)


def test_without_client_subnet_the_resolver_address_is_used_and_no_opt_added() -> None:
    m = ask(query(), source=TOKYO)
    assert a_records(m) == set(REGION_ADDRESSES["ap"])
    assert m.edns == -1
    assert ask(query(), source=f"::ffff:{TOKYO}").answer == m.answer


def test_source_prefix_zero_means_the_resolver_address_and_scope_zero() -> None:
    m = ask(query(ecs="0.0.0.0/0"), source=TOKYO)
    assert a_records(m) == set(REGION_ADDRESSES["ap"])
    assert (ecs_of(m).srclen, ecs_of(m).scopelen) == (0, 0)


def test_scope_zero_when_the_answer_cannot_differ() -> None:
    only_eu = {"us": RegionState.DOWN, "ap": RegionState.DOWN}
    m = ask(query(ecs="203.0.113.0/24"), states=only_eu)
    assert a_records(m) == {"10.0.1.1", "10.0.1.2"} and ecs_of(m).scopelen == 0
    for name in ("us.edge.edgemesh.test", "nope.edgemesh.test", "example.com"):
        assert ecs_of(ask(query(name, ecs="203.0.113.0/24"))).scopelen == 0


def test_answers_are_authoritative_and_copy_rd_and_cd() -> None:
    q = query()
    q.flags |= dns.flags.CD
    m = ask(q)
    assert m.flags & dns.flags.AA and m.flags & dns.flags.RD and m.flags & dns.flags.CD
    assert not m.flags & dns.flags.RA
    q = query(ecs="192.0.2.0/24", want_dnssec=True)
    q.flags &= ~dns.flags.RD
    m = ask(q)
    assert not m.flags & dns.flags.RD and m.ednsflags & dns.flags.DO


def test_malformed_client_subnet_is_formerr_with_opt_and_no_subnet() -> None:
    bad = dns.edns.GenericOption(8, b"\x00\x01\x18\x00\xc0\x00\x02\x07")  # /24, 4 octets
    q = dns.message.make_query("edge.edgemesh.test", "A", use_edns=0, options=[bad])
    m = ask(q)
    assert m.rcode() == dns.rcode.FORMERR and not m.answer
    assert m.edns == 0 and not m.options
    assert not m.flags & dns.flags.AA


def test_bad_edns_version_is_badvers() -> None:
    m = ask(query(use_edns=1))
    assert m.rcode() == dns.rcode.BADVERS and m.edns == 0


def test_other_opcodes_are_notimp() -> None:
    q = query()
    q.set_opcode(dns.opcode.NOTIFY)
    m = ask(q)
    assert (m.rcode(), m.opcode()) == (dns.rcode.NOTIMP, dns.opcode.NOTIFY)


@pytest.mark.parametrize("wire", [b"", b"\x00" * 11, dns.message.make_response(query()).to_wire()])
def test_responses_and_runts_are_dropped(wire: bytes) -> None:
    reply = RESPONDER.respond(wire, PARIS, {}, fixture_locator, udp=True)
    assert reply.wire is None and reply.problem in ("dns.short_header", "dns.not_a_query")


def test_a_failing_lookup_costs_one_servfail_not_the_server() -> None:
    def broken(address: str) -> Location | None:
        raise RuntimeError("boom")

    q = query(ecs="192.0.2.0/24")
    reply = RESPONDER.respond(q.to_wire(), PARIS, {}, broken, udp=True)
    assert reply.wire is not None and reply.problem == "dns.internal_error"
    m = dns.message.from_wire(reply.wire)
    assert m.rcode() == dns.rcode.SERVFAIL and q.is_response(m)


def test_client_address_normalises_mapped_and_scoped_addresses() -> None:
    assert client_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert client_address("fe80::1%eth0") == "fe80::1"
    assert client_address("2001:db8::1") == "2001:db8::1"


# --- size limits ---------------------------------------------------------------------

MANY = geo_topology(
    local_topology(lambda: next(PORTS)),
    {"eu": tuple(f"10.1.0.{i}" for i in range(1, 41)), "us": ("10.0.2.1",), "ap": ("10.0.3.1",)},
)


def test_plain_udp_is_truncated_at_512_and_tcp_is_not() -> None:
    responder = Responder(MANY)
    m = ask(query("eu.edge.edgemesh.test"), responder=responder)
    assert m.flags & dns.flags.TC and not m.answer
    full = ask(query("eu.edge.edgemesh.test"), responder=responder, udp=False)
    assert not full.flags & dns.flags.TC and len(a_records(full)) == 40
    assert len(full.to_wire()) > 512


def test_udp_limit_is_the_advertised_size_capped_by_the_setting() -> None:
    q = query("eu.edge.edgemesh.test", use_edns=0, payload=4096)
    size = len(
        Responder(MANY).respond(q.to_wire(), PARIS, {}, fixture_locator, udp=False).wire or b""
    )
    assert 512 < size < 4096
    at_limit = Responder(MANY, DnsSettings(max_udp_payload=size))
    assert not ask(q, responder=at_limit).flags & dns.flags.TC
    below = Responder(MANY, DnsSettings(max_udp_payload=size - 1))
    assert ask(q, responder=below).flags & dns.flags.TC
    small = query("eu.edge.edgemesh.test", use_edns=0, payload=size - 1)
    assert ask(small, responder=at_limit).flags & dns.flags.TC
    # An advertised size under 512 counts as 512 (RFC 6891 6.2.5).
    assert RESPONDER.size_limit(Edns(udp_size=100), udp=True) == 512


@pytest.mark.parametrize(
    ("kwargs", "ok"),
    [
        ({"max_udp_payload": 511}, False),
        ({"max_udp_payload": 512}, True),
        ({"max_udp_payload": 4096}, True),
        ({"max_udp_payload": 4097}, False),
        ({"tcp_idle_timeout_s": 0}, False),
        ({"tcp_idle_timeout_s": 0.001}, True),
        ({"tcp_idle_timeout_s": 3600}, True),
        ({"tcp_idle_timeout_s": 3600.5}, False),
        ({"max_tcp_connections": 0}, False),
        ({"max_tcp_connections": 1}, True),
        ({"max_tcp_connections": 65536}, True),
        ({"max_tcp_connections": 65537}, False),
    ],
)
def test_settings_boundaries(kwargs: dict[str, float], ok: bool) -> None:
    if ok:
        DnsSettings(**kwargs)  # type: ignore[arg-type]
    else:
        with pytest.raises(DnsSettingsError) as err:
            DnsSettings(**kwargs)  # type: ignore[arg-type]
        assert next(iter(kwargs)) in str(err.value) and err.value.code == "dns.bad_setting"


def test_uncompressed_responses_carry_the_same_answer() -> None:
    plain = Responder(TOPOLOGY, DnsSettings(compress=False))
    q = query("edgemesh.test", "NS")
    a, b = ask(q), ask(q, responder=plain)
    assert a.answer == b.answer and a.additional == b.additional
    sizes = [
        len(r.respond(q.to_wire(), PARIS, {}, fixture_locator, udp=True).wire or b"")
        for r in (RESPONDER, plain)
    ]
    assert sizes[1] > sizes[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=12, max_size=300))
def test_any_reply_to_garbage_is_a_well_formed_response(data: bytes) -> None:
    reply = RESPONDER.respond(data, PARIS, {}, fixture_locator, udp=True)
    if reply.wire is not None:
        m = dns.message.from_wire(reply.wire)
        assert m.flags & dns.flags.QR and m.id == int.from_bytes(data[:2], "big")
        assert reply.rcode is not None and m.rcode() == int(reply.rcode)
