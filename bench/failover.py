"""Failover time: from killing all of eu (its nats-servers and edges) to changed answers.

Each run starts a fresh local deployment (the same as `edgemesh dev`: a NATS supercluster,
the edges when the `edge` subcommand exists, one control-plane instance per region with
the dev settings), kills every eu process with SIGKILL, and polls, every 20 ms, what the
us and ap instances answer a Paris client: `GET /v1/route?ip=` and the geo-DNS A record
of `edge.ZONE` (with an EDNS Client Subnet option, as a resolver would send). The time is
until all four answers say us. A fresh deployment per run keeps the hold-down of one run
from touching the next.

    python bench/failover.py [--runs 5] [--servers-per-region 1]

Needs the test extra (dnspython, mmdb-writer) for the resolver and the City database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.cli import build_parser
from mesh.dev import DevDeployment
from mesh.process import FreePorts
from mesh.topology import Topology, local_topology
from tests.geoip_fixture import CLIENTS, REGION_ADDRESSES, build_city_db, geo_topology

PARIS = CLIENTS["paris"].address


def dns_a(topology: Topology, region: str, client: str) -> set[str]:
    cp = topology.region(region).control_plane
    assert cp is not None
    q = dns.message.make_query(
        f"edge.{topology.dns.zone}",
        dns.rdatatype.A,
        use_edns=0,
        options=[dns.edns.ECSOption(client, 24)],
    )
    resp = dns.query.udp(q, cp.dns_host, port=cp.dns_port, timeout=0.5)
    return {rr.address for rrset in resp.answer for rr in rrset}


def answers_us(http: httpx.Client, topology: Topology, region: str) -> bool:
    cp = topology.region(region).control_plane
    assert cp is not None
    try:
        route = http.get(f"{cp.url}/v1/route", params={"ip": PARIS}).json()["region"]
        names = dns_a(topology, region, PARIS)
    except (httpx.HTTPError, OSError, dns.exception.DNSException, KeyError):
        return False
    us = {a for a in REGION_ADDRESSES["us"] if ":" not in a}
    return bool(route == "us" and names == us)


def one_run(work: Path, servers: int, available: set[str]) -> dict[str, float]:
    topology = geo_topology(local_topology(FreePorts(), servers, 1))
    os.environ["EDGEMESH_GEOIP_DB"] = str(build_city_db(work / "city.mmdb"))
    dev = DevDeployment(topology, work / "dev", None, available)
    dev.startup(timeout=90)
    try:
        assert dev.supercluster is not None
        with httpx.Client(timeout=0.5) as http:
            deadline = time.monotonic() + 60
            while not all(
                http.get(f"{cp.url}/v1/regions").json()["regions"][0]["state"] == "healthy"
                for cp in (r.control_plane for r in topology.regions)
                if cp is not None
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError("eu never healthy everywhere")
                time.sleep(0.2)
            time.sleep(7)  # past the up threshold, so every observer has a long good streak
            killed = time.monotonic()
            dev.supercluster.kill_region("eu")
            for child in dev.children:
                if child.kind == "edge" and child.region == "eu":
                    child.process.kill()
            changed: dict[str, float] = {}
            while len(changed) < 2 and time.monotonic() - killed < 60:
                for region in ("us", "ap"):
                    if region not in changed and answers_us(http, topology, region):
                        changed[region] = time.monotonic() - killed
                time.sleep(0.02)
            return changed
    finally:
        dev.shutdown()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--servers-per-region", type=int, default=1)
    args = ap.parse_args()
    available = {
        c for c in build_parser().get_default("subcommands") if c in ("edge", "control-plane")
    }
    if "control-plane" not in available:
        print("the control-plane subcommand is not installed", file=sys.stderr)
        return 1
    print(f"components: {sorted(available)}; {args.servers_per_region} nats-server(s) per region")
    times: list[float] = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="edgemesh-failover-") as tmp:
            changed = one_run(Path(tmp), args.servers_per_region, available)
        if len(changed) < 2:
            print(f"run {i + 1}: answers did not change within 60 s: {changed}")
            return 1
        worst = max(changed.values())
        times.append(worst)
        print(f"run {i + 1}: us {changed['us']:.2f}s, ap {changed['ap']:.2f}s")
    print(
        json.dumps(
            {
                "runs": len(times),
                "median_s": round(statistics.median(times), 2),
                "max_s": round(max(times), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
