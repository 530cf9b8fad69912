"""The real geo-DNS server on a free port, queried with dnspython as a resolver would."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from control_plane.dns.cli import main
from control_plane.dns.geoip import GeoIpLocator
from control_plane.dns.server import GeoDnsServer
from control_plane.dns.settings import DnsSettings
from mesh.control import RegionState
from mesh.process import FreePorts, ManagedProcess, wait_until
from mesh.secrets import generate_secrets, write_secrets
from mesh.topology import DEV_REGIONS, Topology, local_topology
from tests.geoip_fixture import (
    CLIENTS,
    MUMBAI,
    REGION_ADDRESSES,
    SAO_PAULO,
    build_city_db,
    geo_topology,
)

T = TypeVar("T")
HOST = "127.0.0.1"
TIMEOUT = 10.0  # per query: generous, the machine is shared
# A fourth region with more addresses than fit in 512 octets.
SA_ADDRESSES = tuple(f"10.0.4.{i}" for i in range(1, 41))


class ThreadedServer:
    """A GeoDnsServer on its own event loop thread, so blocking dnspython calls can query it."""

    def __init__(self, server: GeoDnsServer) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="geo-dns", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        self.call(self.server.start(HOST, 0))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            self.loop.close()

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def city_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Loopback resolvers (these tests) are placed in Mumbai: nearest region ap.
    path = tmp_path_factory.mktemp("geoip") / "city.mmdb"
    return build_city_db(path, {"127.0.0.0/8": MUMBAI, "198.19.0.0/16": SAO_PAULO})


@pytest.fixture(scope="module")
def topology() -> Topology:
    regions = (*DEV_REGIONS, ("sa", -23.55, -46.63))
    return geo_topology(
        local_topology(FreePorts(), regions=regions), {**REGION_ADDRESSES, "sa": SA_ADDRESSES}
    )


@pytest.fixture(scope="module")
def states() -> dict[str, RegionState]:
    return {}


@pytest.fixture(scope="module")
def served(
    topology: Topology, city_db: Path, states: dict[str, RegionState]
) -> Iterator[ThreadedServer]:
    locator = GeoIpLocator(city_db)
    try:
        with ThreadedServer(GeoDnsServer(topology, locator, lambda: states)) as running:
            yield running
    finally:
        locator.close()


def make(
    name: str = "edge.edgemesh.test", qtype: str = "A", ecs: str | None = None, **kw: Any
) -> dns.message.Message:
    options = [dns.edns.ECSOption.from_text(ecs)] if ecs else []
    kw.setdefault("use_edns", 0 if ecs else False)
    return dns.message.make_query(name, qtype, options=options, **kw)


def addresses(m: dns.message.Message) -> set[str]:
    return {rd.address for rrset in m.answer for rd in rrset}


def v4(region: str) -> set[str]:
    return {a for a in REGION_ADDRESSES[region] if ":" not in a}


def udp(served: ThreadedServer, q: dns.message.Message, **kw: Any) -> dns.message.Message:
    return dns.query.udp(q, HOST, timeout=TIMEOUT, port=served.port, **kw)


@pytest.mark.parametrize("client", ["paris", "chicago", "tokyo", "paris6", "chicago6", "tokyo6"])
def test_clients_on_three_continents_get_their_nearest_region(
    served: ThreadedServer, client: str
) -> None:
    c = CLIENTS[client]
    assert c.nearest is not None
    prefix = 24 if ":" not in c.address else 48
    subnet = f"{c.address}/{prefix}"
    for qtype in ("A", "AAAA"):
        m = udp(served, make(qtype=qtype, ecs=subnet))
        assert m.rcode() == dns.rcode.NOERROR and m.flags & dns.flags.AA
        expected = {a for a in REGION_ADDRESSES[c.nearest] if (":" in a) == (qtype == "AAAA")}
        assert addresses(m) == expected
        (opt,) = m.options
        assert isinstance(opt, dns.edns.ECSOption)
        assert (opt.srclen, opt.scopelen) == (prefix, prefix)
        assert all(rrset.ttl == 30 for rrset in m.answer)


def test_without_ecs_the_resolver_address_decides(served: ThreadedServer) -> None:
    m = udp(served, make())  # from 127.0.0.1, placed in Mumbai
    assert addresses(m) == v4("ap")


def test_a_down_region_leaves_the_answers_at_once(
    served: ThreadedServer, states: dict[str, RegionState]
) -> None:
    paris = make(ecs="192.0.2.0/24")
    assert addresses(udp(served, paris)) == v4("eu")
    states["eu"] = RegionState.DOWN
    try:
        assert addresses(udp(served, paris)) == v4("us")
        assert addresses(udp(served, make("eu.edge.edgemesh.test"))) == v4("eu")
    finally:
        del states["eu"]
    assert addresses(udp(served, paris)) == v4("eu")


def test_error_rcodes_over_udp(served: ThreadedServer) -> None:
    assert udp(served, make("example.com")).rcode() == dns.rcode.REFUSED
    nx = udp(served, make("nope.edgemesh.test"))
    assert nx.rcode() == dns.rcode.NXDOMAIN and nx.authority[0].rdtype == dns.rdatatype.SOA
    bad = dns.edns.GenericOption(8, b"\x00\x01\x19\x00\xc0\x00\x02")  # /25 with 3 octets
    q = dns.message.make_query("edge.edgemesh.test", "A", use_edns=0, options=[bad])
    assert udp(served, q).rcode() == dns.rcode.FORMERR
    soa = udp(served, make("edgemesh.test", "SOA"))
    assert soa.answer[0][0].mname.to_text() == "ns-eu.edgemesh.test."
    ns = udp(served, make("edgemesh.test", "NS"))
    assert len(ns.answer[0]) == 4 and len(ns.additional) == 4


def test_truncated_udp_falls_back_to_tcp(served: ThreadedServer) -> None:
    q = make("sa.edge.edgemesh.test")
    cut = udp(served, q)
    assert cut.flags & dns.flags.TC and not cut.answer
    m, used_tcp = dns.query.udp_with_fallback(q, HOST, timeout=TIMEOUT, port=served.port)
    assert used_tcp and addresses(m) == set(SA_ADDRESSES)
    # A resolver advertising a large EDNS buffer gets it all over UDP.
    big = udp(served, make("sa.edge.edgemesh.test", use_edns=0, payload=1232))
    assert not big.flags & dns.flags.TC and addresses(big) == set(SA_ADDRESSES)


def test_tcp_answers_several_queries_on_one_connection(served: ThreadedServer) -> None:
    before = served.server.counters.tcp_connections
    with socket.create_connection((HOST, served.port), timeout=TIMEOUT) as s:
        for client in ("paris", "chicago", "tokyo"):
            c = CLIENTS[client]
            assert c.nearest is not None
            m = dns.query.tcp(make(ecs=f"{c.address}/24"), HOST, timeout=TIMEOUT, sock=s)
            assert addresses(m) == v4(c.nearest)
        assert dns.query.tcp(make("example.com"), HOST, timeout=TIMEOUT, sock=s).rcode() == (
            dns.rcode.REFUSED
        )
    assert served.server.counters.tcp_connections == before + 1


def test_garbage_gets_no_reply_or_formerr_and_the_server_carries_on(
    served: ThreadedServer,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((HOST, served.port))
        response = dns.message.make_response(make()).to_wire()
        for junk in (b"", b"\x01", b"\xff" * 11, response):
            s.send(junk)  # none of these gets a reply
        s.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0")  # FORMERR, id 0x1234
        formerr = dns.message.from_wire(s.recv(4096))
        assert formerr.id == 0x1234 and formerr.rcode() == dns.rcode.FORMERR
        q = make()
        s.send(q.to_wire())
        assert q.is_response(dns.message.from_wire(s.recv(4096)))
    with socket.create_connection((HOST, served.port), timeout=TIMEOUT) as t:
        t.sendall(b"\x00\x03abc")  # a 3-octet "query": dropped, connection closed
        assert t.recv(100) == b""


def test_ten_thousand_queries_in_a_row(served: ThreadedServer) -> None:
    questions = [
        (make(ecs=f"{CLIENTS[n].address}/24"), v4(CLIENTS[n].nearest or ""))
        for n in ("paris", "chicago", "tokyo")
    ] + [(make("us.edge.edgemesh.test"), v4("us")), (make(), v4("ap"))]
    wires = [(q.to_wire(), q, expected) for q, expected in questions]
    before = served.server.counters.udp_queries
    errors = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((HOST, served.port))
        for i in range(10_000):
            wire, q, expected = wires[i % len(wires)]
            s.send(wire)
            m = dns.message.from_wire(s.recv(4096))
            if not q.is_response(m) or m.rcode() != 0 or addresses(m) != expected:
                errors += 1
    assert errors == 0
    assert served.server.counters.udp_queries - before == 10_000


def test_idle_tcp_connection_is_closed_after_the_timeout(topology: Topology) -> None:
    settings = DnsSettings(tcp_idle_timeout_s=0.3)
    with ThreadedServer(GeoDnsServer(topology, lambda _a: None, dict, settings)) as srv:
        with socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as s:
            start = time.monotonic()  # before the query: the server's idle clock starts later
            m = dns.query.tcp(make(), HOST, timeout=TIMEOUT, sock=s)
            assert m.rcode() == dns.rcode.NOERROR
            assert s.recv(100) == b""  # the server closed it
            assert time.monotonic() - start >= 0.3
        assert srv.server.counters.tcp_idle_closed == 1


def test_connections_over_the_limit_are_closed(topology: Topology) -> None:
    settings = DnsSettings(max_tcp_connections=2)
    with ThreadedServer(GeoDnsServer(topology, lambda _a: None, dict, settings)) as srv:
        first = socket.create_connection((HOST, srv.port), timeout=TIMEOUT)
        second = socket.create_connection((HOST, srv.port), timeout=TIMEOUT)
        try:
            for s in (first, second):  # both served: the server holds two connections now
                assert dns.query.tcp(make(), HOST, timeout=TIMEOUT, sock=s).rcode() == 0
            with socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as third:
                assert third.recv(100) == b""
            assert srv.server.counters.tcp_rejected == 1
            first.close()

            def a_new_connection_is_served() -> bool:
                with socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as s:
                    try:
                        return dns.query.tcp(make(), HOST, timeout=TIMEOUT, sock=s).rcode() == 0
                    except (EOFError, ConnectionError):
                        return False  # still over the limit: closed at once

            assert wait_until(a_new_connection_is_served, timeout=TIMEOUT)
        finally:
            first.close()
            second.close()


def test_stop_closes_open_connections(topology: Topology) -> None:
    srv = ThreadedServer(GeoDnsServer(topology, lambda _a: None, dict))
    with srv, socket.create_connection((HOST, srv.port), timeout=TIMEOUT) as s:
        assert dns.query.tcp(make(), HOST, timeout=TIMEOUT, sock=s).rcode() == 0
        srv.call(srv.server.stop())
        assert s.recv(100) == b""


# --- the command ---------------------------------------------------------------------


def test_dns_command_serves_until_sigterm(
    topology: Topology, city_db: Path, tmp_path: Path
) -> None:
    topo_file = tmp_path / "topology.json"
    topo_file.write_text(topology.to_json())
    secrets_file = tmp_path / "secrets.json"
    write_secrets(generate_secrets(), secrets_file)
    port = FreePorts()()
    argv = [sys.executable, "-m", "control_plane.dns", "--topology", str(topo_file)]
    argv += ["--secrets", str(secrets_file), "--region", "eu", "--geoip-db", str(city_db)]
    argv += ["--host", HOST, "--port", str(port)]
    proc = ManagedProcess("dns", argv, tmp_path / "dns.log")
    proc.start()
    try:
        assert wait_until(lambda: "serving edgemesh.test" in proc.log_tail(20), 30), proc.log_tail()
        m = dns.query.udp(make(ecs="198.51.100.0/24"), HOST, timeout=TIMEOUT, port=port)
        assert addresses(m) == v4("us")
        m = dns.query.tcp(make("edgemesh.test", "SOA"), HOST, timeout=TIMEOUT, port=port)
        assert m.rcode() == 0 and m.answer
        proc.signal(signal.SIGTERM)
        assert wait_until(lambda: not proc.running(), 30)
        assert proc.exit_code() == 0
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--geoip-db", "/nonexistent/city.mmdb"], "cannot open the GeoIP database"),
        (["--region", "mars"], "unknown region 'mars'"),
        (["--max-udp-payload", "100"], "max_udp_payload"),
    ],
)
def test_dns_command_rejects_bad_configuration(
    topology: Topology,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    topo_file = tmp_path / "topology.json"
    topo_file.write_text(topology.to_json())
    args = ["--topology", str(topo_file), "--region", "eu", "--port", "1", *extra]
    assert main(args) == 2
    assert message in capsys.readouterr().err
