"""Real control-plane instances (`edgemesh control-plane` subprocesses) for integration tests.

Each instance is a `ManagedProcess` stopped by its own pid; `ControlPlanes.stop_all()` in
a fixture's teardown leaves nothing running.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rdatatype
import httpx

from mesh.process import ManagedProcess
from mesh.secrets import Secrets, write_secrets
from mesh.topology import Topology
from tests.geoip_fixture import REGION_ADDRESSES

# Fast and forgiving settings for tests on a busy two-core machine: a 1 s round, a probe
# timeout that tolerates a slow scheduler, observation TTL of several rounds.
TEST_ARGS = ("--probe-timeout-s", "0.9", "--observation-ttl-s", "6")


class ControlPlanes:
    def __init__(
        self,
        topology: Topology,
        secrets: Secrets,
        workdir: Path,
        geoip_db: Path | None = None,
        args: Sequence[str] = TEST_ARGS,
    ) -> None:
        self.topology = topology
        self.workdir = workdir
        self.geoip_db = geoip_db
        self.args = list(args)
        workdir.mkdir(parents=True, exist_ok=True)
        self.topology_file = self.write_topology(topology, "topology.json")
        self.secrets_file = workdir / "secrets.json"
        write_secrets(secrets.for_role("control"), self.secrets_file)  # a control plane's part
        self.edge_secrets_file = workdir / "secrets-edge.json"  # for tests that add edges
        write_secrets(secrets.for_role("edge"), self.edge_secrets_file)
        self.api_key = secrets.api_keys[0]
        self.procs: dict[str, ManagedProcess] = {}
        self.http = httpx.AsyncClient(timeout=5.0)

    def write_topology(self, topology: Topology, name: str) -> Path:
        path = self.workdir / name
        path.write_text(topology.to_json())
        return path

    def url(self, region: str) -> str:
        cp = self.topology.region(region).control_plane
        assert cp is not None
        return cp.url

    def start(
        self, region: str, topology_file: Path | None = None, extra: Sequence[str] = ()
    ) -> None:
        argv = [sys.executable, "-m", "mesh.cli", "control-plane"]
        argv += ["--topology", str(topology_file or self.topology_file)]
        argv += ["--secrets", str(self.secrets_file), "--region", region]
        if self.geoip_db is not None:
            argv += ["--geoip-db", str(self.geoip_db)]
        argv += [*self.args, *extra]
        n = len([p for p in self.workdir.glob(f"{region}-cp*.log")])
        proc = ManagedProcess(f"cp {region}", argv, self.workdir / f"{region}-cp{n}.log")
        proc.start()
        self.procs[region] = proc

    def stop(self, region: str) -> None:
        proc = self.procs.pop(region, None)
        if proc is not None:
            proc.stop()

    def stop_all(self) -> None:
        for region in list(self.procs):
            self.stop(region)

    async def aclose(self) -> None:
        self.stop_all()
        await self.http.aclose()

    async def get(self, region: str, path: str) -> Any:
        r = await self.http.get(self.url(region) + path)
        r.raise_for_status()
        return r.json()

    async def post(self, region: str, path: str, key: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await self.http.post(self.url(region) + path, headers=headers)

    async def states(self, region: str) -> dict[str, str]:
        doc = await self.get(region, "/v1/regions")
        return {r["name"]: r["state"] for r in doc["regions"]}

    async def wait_ready(self, regions: Sequence[str], within: float = 30.0) -> None:
        """Until every instance answers and has fresh reports from all the others."""

        async def ready() -> bool:
            for region in regions:
                proc = self.procs[region]
                assert proc.running(), f"{region} instance exited: {proc.log_tail(20)}"
                doc = await self.get(region, f"/v1/regions/{self.topology.names[0]}")
                fresh = [o for o, v in doc["observers"].items() if v["age_ms"] < 3000]
                if set(fresh) < set(regions):
                    return False
            return True

        try:
            await wait_for(ready, within, "instances ready")
        except AssertionError as exc:
            logs = "\n".join(f"{r}: {self.procs[r].log_tail(8)}" for r in regions)
            raise AssertionError(f"{exc}\n{logs}") from None


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.2
) -> float:
    """Poll `predicate` until true; returns the seconds it took. Fails the test on timeout.
    Connection errors count as "not yet"."""
    start = time.monotonic()
    last: object = None
    while True:
        try:
            if await predicate():
                return time.monotonic() - start
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            last = exc
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


def dump(doc: Any) -> str:
    return json.dumps(doc, indent=1)[:4000]


def dns_answer(planes: ControlPlanes, region: str, client: str) -> set[str]:
    """What `region`'s geo-DNS answers for edge.ZONE A to a resolver sending ECS `client`."""
    cp = planes.topology.region(region).control_plane
    assert cp is not None
    q = dns.message.make_query(
        f"edge.{planes.topology.dns.zone}",
        dns.rdatatype.A,
        use_edns=0,
        options=[dns.edns.ECSOption(client, 24)],
    )
    resp = dns.query.udp(q, cp.dns_host, port=cp.dns_port, timeout=3)
    return {rr.address for rrset in resp.answer for rr in rrset}


async def views_of(planes: ControlPlanes, regions: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Each instance's region states."""
    return {r: await planes.states(r) for r in regions}


def addresses(region: str) -> set[str]:
    return {a for a in REGION_ADDRESSES[region] if ":" not in a}
