"""The zone answer policy: which region, which records, which rcode. Pure, no sockets."""

from __future__ import annotations

import itertools
import json

import pytest

from control_plane.dns.message import Question, Rcode, RRType
from control_plane.dns.names import name_from_text
from control_plane.dns.policy import ZoneAnswer, ZonePolicy
from mesh.control import RegionState
from mesh.topology import DEV_REGIONS, Topology, local_topology, parse_topology
from tests.geoip_fixture import (
    CLIENTS,
    REGION_ADDRESSES,
    UNKNOWN_ADDRESS,
    fixture_locator,
    geo_topology,
)

DOWN, DRAINING, DEGRADED = RegionState.DOWN, RegionState.DRAINING, RegionState.DEGRADED


def base_topology(regions: tuple[tuple[str, float, float], ...] = DEV_REGIONS) -> Topology:
    ports = itertools.count(20000)
    return local_topology(lambda: next(ports), regions=regions)


def ask(
    policy: ZonePolicy,
    name: str,
    qtype: int = RRType.A,
    client: str = UNKNOWN_ADDRESS,
    states: dict[str, RegionState] | None = None,
    qclass: int = 1,
) -> ZoneAnswer:
    q = Question(name_from_text(name), int(qtype), qclass)
    return policy.answer(q, client, states or {}, fixture_locator)


def addresses(answer: ZoneAnswer) -> set[str]:
    return {str(r.data) for r in answer.answer}


def v4(region: str) -> set[str]:
    return {a for a in REGION_ADDRESSES[region] if ":" not in a}


POLICY = ZonePolicy(geo_topology(base_topology()))
PORTS = itertools.count(30000)


@pytest.mark.parametrize("client", ["paris", "chicago", "tokyo", "paris6", "chicago6", "tokyo6"])
def test_edge_gives_the_nearest_region(client: str) -> None:
    c = CLIENTS[client]
    assert c.nearest is not None
    answer = ask(POLICY, "edge.edgemesh.test", client=c.address)
    assert (answer.rcode, answer.authoritative, answer.region) == (Rcode.NOERROR, True, c.nearest)
    assert addresses(answer) == v4(c.nearest)
    assert all(r.ttl == 30 for r in answer.answer)
    assert answer.tailored


@pytest.mark.parametrize("client", [UNKNOWN_ADDRESS, CLIENTS["nowhere"].address])
def test_unknown_location_gets_the_first_region_by_default(client: str) -> None:
    assert ask(POLICY, "edge.edgemesh.test", client=client).region == "eu"


def test_unknown_location_gets_the_configured_default_region() -> None:
    policy = ZonePolicy(geo_topology(base_topology(), default_region="ap"))
    assert ask(policy, "edge.edgemesh.test").region == "ap"
    # ap down: the usable region nearest to ap (Singapore: Frankfurt is nearer than Virginia).
    assert ask(policy, "edge.edgemesh.test", states={"ap": DOWN}).region == "eu"


@pytest.mark.parametrize("state", [DOWN, DRAINING])
def test_unusable_region_is_skipped_for_the_next_nearest(state: RegionState) -> None:
    paris = CLIENTS["paris"].address
    answer = ask(POLICY, "edge.edgemesh.test", client=paris, states={"eu": state})
    assert answer.region == "us"
    assert addresses(answer) == v4("us")


def test_degraded_and_unreported_regions_still_serve() -> None:
    paris = CLIENTS["paris"].address
    states = {"eu": DEGRADED, "us": DOWN}
    assert ask(POLICY, "edge.edgemesh.test", client=paris, states=states).region == "eu"
    tokyo = CLIENTS["tokyo"].address  # ap has no verdict at all
    assert ask(POLICY, "edge.edgemesh.test", client=tokyo, states=states).region == "ap"


def test_when_no_region_is_usable_the_nearest_is_given_anyway() -> None:
    states = {"eu": DOWN, "us": DRAINING, "ap": DOWN}
    for name in ("paris", "chicago", "tokyo"):
        c = CLIENTS[name]
        answer = ask(POLICY, "edge.edgemesh.test", client=c.address, states=states)
        assert answer.region == c.nearest and answer.answer


def test_scope_is_zero_when_every_client_gets_the_same_answer() -> None:
    only_eu = {"us": DOWN, "ap": DOWN}
    assert not ask(POLICY, "edge.edgemesh.test", states=only_eu).tailored
    assert not ask(POLICY, "eu.edge.edgemesh.test").tailored
    assert not ask(POLICY, "edgemesh.test", RRType.SOA).tailored
    # Every region on 127.0.0.1 (a plain local topology): the answer cannot vary.
    assert not ask(ZonePolicy(base_topology()), "edge.edgemesh.test").tailored


def test_region_name_answers_that_region_whatever_its_state() -> None:
    answer = ask(POLICY, "us.edge.edgemesh.test", states={"us": DOWN})
    assert (answer.rcode, answer.region) == (Rcode.NOERROR, "us")
    assert addresses(answer) == v4("us")
    aaaa = ask(POLICY, "us.edge.edgemesh.test", RRType.AAAA)
    assert addresses(aaaa) == {"fd00:2::1"}


def test_no_record_of_that_type_is_nodata_with_the_soa() -> None:
    for answer in (
        ask(POLICY, "ap.edge.edgemesh.test", RRType.AAAA),
        ask(POLICY, "edge.edgemesh.test", RRType.AAAA, client=CLIENTS["tokyo"].address),
        ask(POLICY, "edge.edgemesh.test", 16),  # TXT
        ask(POLICY, "edgemesh.test", RRType.A),
    ):
        assert (answer.rcode, answer.authoritative, answer.answer) == (Rcode.NOERROR, True, ())
        assert [r.rtype for r in answer.authority] == [RRType.SOA]


def test_aaaa_for_edge_follows_the_same_region_choice() -> None:
    answer = ask(POLICY, "edge.edgemesh.test", RRType.AAAA, client=CLIENTS["chicago6"].address)
    assert addresses(answer) == {"fd00:2::1"} and answer.tailored


UNKNOWN_NAMES = ["nope", "xx.edge", "a.eu.edge", "a.ns-eu", "ns-mars", "ns1"]


@pytest.mark.parametrize("name", [f"{n}.edgemesh.test" for n in UNKNOWN_NAMES])
def test_unknown_names_in_the_zone_are_nxdomain(name: str) -> None:
    answer = ask(POLICY, name)
    assert (answer.rcode, answer.authoritative, answer.answer) == (Rcode.NXDOMAIN, True, ())
    (soa,) = answer.authority
    assert soa.rtype == RRType.SOA and soa.name == name_from_text("edgemesh.test")


@pytest.mark.parametrize(
    ("name", "qtype", "qclass", "rcode"),
    [
        ("example.com", RRType.A, 1, Rcode.REFUSED),
        ("xedgemesh.test", RRType.A, 1, Rcode.REFUSED),  # not a label boundary
        ("test", RRType.NS, 1, Rcode.REFUSED),  # the parent
        ("edge.edgemesh.test", RRType.A, 3, Rcode.REFUSED),  # class CH
        ("edgemesh.test", RRType.AXFR, 1, Rcode.REFUSED),
        ("edgemesh.test", RRType.IXFR, 1, Rcode.REFUSED),
        ("edgemesh.test", 253, 1, Rcode.NOTIMP),  # MAILB
    ],
)
def test_refused_and_notimp(name: str, qtype: int, qclass: int, rcode: Rcode) -> None:
    answer = ask(POLICY, name, qtype, qclass=qclass)
    assert (answer.rcode, answer.authoritative, answer.answer) == (rcode, False, ())


def test_apex_soa_and_ns_with_glue() -> None:
    soa = ask(POLICY, "edgemesh.test", RRType.SOA)
    (record,) = soa.answer
    assert record.rtype == RRType.SOA and soa.additional == ()
    assert POLICY.soa.mname == name_from_text("ns-eu.edgemesh.test")
    assert POLICY.soa.minimum == 30
    ns = ask(POLICY, "edgemesh.test", RRType.NS)
    assert [r.data for r in ns.answer] == [
        name_from_text(f"ns-{r}.edgemesh.test") for r in ("eu", "us", "ap")
    ]
    assert [(r.name, str(r.data)) for r in ns.additional] == [
        (name_from_text(f"ns-{r}.edgemesh.test"), "127.0.0.1") for r in ("eu", "us", "ap")
    ]
    glue = ask(POLICY, "ns-us.edgemesh.test", RRType.A)
    assert addresses(glue) == {"127.0.0.1"}


def test_glue_only_for_usable_addresses() -> None:
    data = json.loads(base_topology().to_json())
    data["regions"][0]["control_plane"]["dns_host"] = "dns.eu.example"
    data["regions"][1]["control_plane"]["dns_host"] = "::"
    data["regions"][2]["control_plane"]["dns_host"] = "2001:db8::53"
    policy = ZonePolicy(parse_topology(data))
    ns = ask(policy, "edgemesh.test", RRType.NS)
    assert len(ns.answer) == 3
    assert [(r.rtype, str(r.data)) for r in ns.additional] == [(RRType.AAAA, "2001:db8::53")]
    assert ask(policy, "ns-eu.edgemesh.test", RRType.A).answer == ()
    assert ask(policy, "ns-eu.edgemesh.test", RRType.A).rcode == Rcode.NOERROR


def test_glue_is_the_advertised_address_not_the_bind_address() -> None:
    # A cloud instance binds its private address; resolvers reach its public one.
    data = json.loads(base_topology().to_json())
    private = ["10.10.0.10", "10.20.0.10", "10.30.0.10"]
    public = ["198.51.100.53", None, "2001:db8::53"]
    for region, host, advertised in zip(data["regions"], private, public, strict=True):
        region["control_plane"]["dns_host"] = host
        if advertised is not None:
            region["control_plane"]["dns_public_address"] = advertised
    policy = ZonePolicy(parse_topology(data))
    ns = ask(policy, "edgemesh.test", RRType.NS)
    assert [(r.name, r.rtype, str(r.data)) for r in ns.additional] == [
        (name_from_text("ns-eu.edgemesh.test"), RRType.A, "198.51.100.53"),
        (name_from_text("ns-us.edgemesh.test"), RRType.A, "10.20.0.10"),  # none: dns_host
        (name_from_text("ns-ap.edgemesh.test"), RRType.AAAA, "2001:db8::53"),
    ]
    assert addresses(ask(policy, "ns-eu.edgemesh.test", RRType.A)) == {"198.51.100.53"}
    assert addresses(ask(policy, "ns-us.edgemesh.test", RRType.A)) == {"10.20.0.10"}
    ap = ask(policy, "ns-ap.edgemesh.test", RRType.A)
    assert (ap.rcode, ap.answer) == (Rcode.NOERROR, ())  # only an IPv6 address is advertised
    assert addresses(ask(policy, "ns-ap.edgemesh.test", RRType.AAAA)) == {"2001:db8::53"}


def test_any_gives_every_record_of_the_name() -> None:
    edge = ask(POLICY, "edge.edgemesh.test", RRType.ANY, client=CLIENTS["paris"].address)
    assert addresses(edge) == set(REGION_ADDRESSES["eu"])
    apex = ask(POLICY, "edgemesh.test", RRType.ANY)
    assert {r.rtype for r in apex.answer} == {RRType.SOA, RRType.NS}
    assert len(apex.additional) == 3


def test_names_compare_case_insensitively_and_echo_the_case_asked() -> None:
    answer = ask(POLICY, "EDGE.EdgeMesh.TEST", client=CLIENTS["tokyo"].address)
    assert answer.region == "ap"
    assert answer.answer[0].name == (b"EDGE", b"EdgeMesh", b"TEST")


def test_ttl_comes_from_the_topology() -> None:
    policy = ZonePolicy(geo_topology(base_topology(), ttl_s=7))
    records = [
        *ask(policy, "edge.edgemesh.test").answer,
        *ask(policy, "edgemesh.test", RRType.NS).answer,
        *ask(policy, "edgemesh.test", RRType.NS).additional,
        *ask(policy, "nope.edgemesh.test").authority,
    ]
    assert records and {r.ttl for r in records} == {7}
    assert policy.soa.minimum == 7


def test_regions_without_addresses_are_never_chosen() -> None:
    regions = (*DEV_REGIONS, ("eu2", 50.0, 8.0))  # right next to Frankfurt, nothing to give
    topology = geo_topology(
        local_topology(lambda: next(PORTS), edges_per_region=0, regions=regions)
    )
    policy = ZonePolicy(topology)
    assert ask(policy, "edge.edgemesh.test", client=CLIENTS["paris"].address).region == "eu"
    nodata = ask(policy, "eu2.edge.edgemesh.test")
    assert (nodata.rcode, nodata.answer) == (Rcode.NOERROR, ())


def test_no_addresses_anywhere_is_nodata_not_an_error() -> None:
    topology = local_topology(lambda: next(PORTS), edges_per_region=0)
    answer = ask(ZonePolicy(topology), "edge.edgemesh.test")
    assert (answer.rcode, answer.answer, answer.region) == (Rcode.NOERROR, (), None)


def test_choose_region_is_usable_for_the_route_api_too() -> None:
    chicago = POLICY.choose_region(CLIENTS["chicago"].location, {})
    assert chicago is not None and chicago.name == "us"
    default_down = POLICY.choose_region(None, {"eu": DOWN})
    assert default_down is not None and default_down.name == "us"
    assert [r.name for r in POLICY.running({"eu": DOWN, "ap": DRAINING})] == ["us"]
