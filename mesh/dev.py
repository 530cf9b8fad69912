"""`edgemesh dev`: the whole multi-region deployment on this machine.

Lifecycle: ``startup()`` (secrets, NATS supercluster, then every component that
exists: edges, control planes), ``run()`` until SIGINT/SIGTERM, ``shutdown()`` in
reverse order. Every child is stopped by its own pid; nothing is left running.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from mesh.pki import issue_local_pki
from mesh.process import LaunchError, ManagedProcess, port_in_use
from mesh.secrets import Role, Secrets, api_keys_from_env, generate_secrets, write_secrets
from mesh.supercluster import Supercluster
from mesh.topology import Topology


@dataclass(frozen=True)
class DevComponent:
    """A kind of process `edgemesh dev` runs besides NATS (one per edge or per region)."""

    kind: str  # "edge" or "control-plane": also the CLI subcommand
    per: str  # "edge" or "region"
    ready_path: str  # answers 200 once the process can serve


# Components in start order. A component's subcommand must exist in the CLI.
# An edge is ready once it reaches NATS and its streams exist (/readyz), not just alive.
COMPONENTS = (
    DevComponent("edge", "edge", "/readyz"),
    DevComponent("control-plane", "region", "/healthz"),
)
# Each component gets only its role's part of the secrets (mesh.secrets.Secrets.for_role).
ROLE_OF: dict[str, Role] = {"edge": "edge", "control-plane": "control"}


CHILD_STOP_TIMEOUT_S = 30.0


@dataclass
class Child:
    name: str
    kind: str
    region: str
    url: str
    process: ManagedProcess
    ready_path: str
    extra: dict[str, Any] = field(default_factory=dict)


class DevDeployment:
    def __init__(
        self,
        topology: Topology,
        data_dir: Path,
        state_file: Path | None,
        available: set[str],
        secrets: Secrets | None = None,
        tls: bool = True,
    ) -> None:
        # With `tls` and no TLS files in the topology, startup() makes a local CA and
        # the servers' certificate (mesh/tls.py): dev speaks TLS like a deployment.
        self.tls = tls
        self.topology = topology
        self.data_dir = data_dir
        self.state_file = state_file
        self.available = available
        env_keys = api_keys_from_env()
        base = secrets or generate_secrets()
        self.secrets = base.model_copy(update={"api_keys": env_keys}) if env_keys else base
        self.topology_path = data_dir / "topology.json"
        self.secrets_path = data_dir / "secrets.json"
        self.supercluster: Supercluster | None = None
        self.children: list[Child] = []
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------

    def startup(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.tls and self.topology.tls is None:
            self.topology = issue_local_pki(self.topology, self.data_dir / "tls")
        self.topology_path.write_text(self.topology.to_json())
        write_secrets(self.secrets, self.secrets_path)
        for role in ROLE_OF.values():
            write_secrets(self.secrets.for_role(role), self.role_secrets_path(role))
        self.supercluster = Supercluster(self.topology, self.secrets, self.data_dir)
        self._plan_children()
        self._check_ports()
        try:
            self.supercluster.start(timeout)
            for child in self.children:
                child.process.start()
            self._wait_children(timeout)
        except BaseException:
            self.shutdown()
            raise
        self.write_state()

    def role_secrets_path(self, role: Role) -> Path:
        """Where the part of the secrets that `role`'s components need is written."""
        return self.data_dir / f"secrets-{role}.json"

    def _plan_children(self) -> None:
        env = dict(os.environ)
        for comp in COMPONENTS:
            if comp.kind not in self.available:
                continue
            secrets_path = self.role_secrets_path(ROLE_OF[comp.kind])
            common = ["--topology", str(self.topology_path), "--secrets", str(secrets_path)]
            for region in self.topology.regions:
                if comp.per == "edge":
                    for e in region.edges:
                        argv = [sys.executable, "-m", "mesh.cli", comp.kind, *common]
                        argv += ["--region", region.name, "--edge", e.name]
                        self._add(e.name, comp, region.name, e.url, argv, env)
                elif region.control_plane is not None:
                    argv = [sys.executable, "-m", "mesh.cli", comp.kind, *common]
                    argv += ["--region", region.name]
                    name = f"{region.name}-cp"
                    url = region.control_plane.url
                    child = self._add(name, comp, region.name, url, argv, env)
                    cp = region.control_plane
                    child.extra["dns"] = f"{cp.dns_host}:{cp.dns_port}"

    def _add(
        self,
        name: str,
        comp: DevComponent,
        region: str,
        url: str,
        argv: list[str],
        env: dict[str, str],
    ) -> Child:
        log = self.data_dir / "logs" / f"{name}.log"
        proc = ManagedProcess(f"{comp.kind} {name}", argv, log, env)
        child = Child(name, comp.kind, region, url, proc, comp.ready_path)
        self.children.append(child)
        return child

    def _check_ports(self) -> None:
        assert self.supercluster is not None
        self.supercluster.check_ports()
        for child in self.children:
            host_port = child.url.split("://", 1)[1]
            host, _, port = host_port.rpartition(":")
            if port_in_use(host, int(port)):
                raise LaunchError(
                    f"port {port} ({child.name}) on {host} is already in use: stop what holds "
                    "it or choose another --port-base"
                )

    def _wait_children(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.children)
        with httpx.Client(timeout=1.0) as http:
            while pending:
                for child in list(pending):
                    if not child.process.running():
                        raise LaunchError(
                            f"{child.name} exited with code {child.process.exit_code()}: "
                            f"{child.process.log_tail()}"
                        )
                    try:
                        if http.get(f"{child.url}{child.ready_path}").status_code == 200:
                            pending.remove(child)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    names = ", ".join(c.name for c in pending)
                    raise LaunchError(f"not ready within {timeout:.0f}s: {names}")
                if pending:
                    time.sleep(0.1)

    def run(self) -> int:
        """Block until asked to stop. Reports children that die, keeps the rest running."""
        reported: set[str] = set()
        while not self._stop.wait(0.5):
            assert self.supercluster is not None
            procs = [(h.server.name, h.process) for h in self.supercluster.servers.values()]
            procs += [(c.name, c.process) for c in self.children]
            for name, proc in procs:
                code = proc.exit_code()
                if code is not None and name not in reported:
                    reported.add(name)
                    print(f"edgemesh dev: {name} exited with code {code}", file=sys.stderr)
                elif code is None:
                    reported.discard(name)
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    def shutdown(self) -> None:
        # Every child drains at once (one SIGTERM each: a second one means "stop now" to
        # an edge); an edge's drain is bounded by its drain settings, 18 s by default.
        for child in self.children:
            child.process.signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for child in reversed(self.children):
            child.process.wait_or_kill(deadline - time.monotonic())
        if self.supercluster is not None:
            self.supercluster.stop()
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)

    # -- reporting ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        assert self.supercluster is not None
        regions: dict[str, Any] = {}
        for r in self.topology.regions:
            regions[r.name] = {
                "latitude": r.latitude,
                "longitude": r.longitude,
                "nats": [
                    {
                        "name": h.server.name,
                        "client_url": self.topology.client_url(h.server),
                        "monitor_url": self.topology.monitor_url(h.server),
                        "pid": h.process.pid,
                    }
                    for h in self.supercluster.servers.values()
                    if h.region.name == r.name
                ],
                "edges": [
                    {
                        "name": c.name,
                        "url": c.url,
                        "ws_url": c.url.replace("http", "ws", 1) + "/v1/connect",
                        "pid": c.process.pid,
                    }
                    for c in self.children
                    if c.kind == "edge" and c.region == r.name
                ],
                "control_plane": next(
                    (
                        {"url": c.url, "pid": c.process.pid, **c.extra}
                        for c in self.children
                        if c.kind == "control-plane" and c.region == r.name
                    ),
                    None,
                ),
            }
        return {
            "pid": os.getpid(),
            "data_dir": str(self.data_dir),
            "topology_file": str(self.topology_path),
            "secrets_file": str(self.secrets_path),
            "api_key": self.secrets.api_keys[0] if self.secrets.api_keys else None,
            "nats_users": {u: self.secrets.password(u) for u in ("edge", "control")},
            # The CA that signed the NATS servers' certificate (None: plain text).
            "nats_ca_file": self.topology.tls.ca_file if self.topology.tls else None,
            "regions": regions,
        }

    def write_state(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state(), f, indent=2)
        tmp.replace(self.state_file)

    def summary(self) -> str:
        st = self.state()
        lines = [f"edgemesh dev: {len(st['regions'])} regions up (data in {st['data_dir']})"]
        for name, r in st["regions"].items():
            lines.append(f"  region {name}")
            for n in r["nats"]:
                lines.append(
                    f"    nats  {n['name']:<8} {n['client_url']}  monitor {n['monitor_url']}"
                )
            for e in r["edges"]:
                lines.append(f"    edge  {e['name']:<8} {e['url']}  websocket {e['ws_url']}")
            cp = r["control_plane"]
            if cp:
                lines.append(f"    control-plane    {cp['url']}  dns {cp.get('dns', '-')}")
        if st["api_key"]:
            lines.append(f"  API key: {st['api_key']}")
        lines.append(f"  topology: {st['topology_file']}  secrets: {st['secrets_file']}")
        if st["nats_ca_file"]:
            lines.append(f"  NATS speaks TLS only; its CA: {st['nats_ca_file']}")
        if self.state_file:
            lines.append(f"  state: {self.state_file}")
        lines.append("  Ctrl-C stops everything.")
        return "\n".join(lines)


def run_dev(
    topology: Topology,
    data_dir: Path | None,
    state_file: Path | None,
    available: set[str],
    tls: bool = True,
) -> int:
    """Run the deployment in the foreground until SIGINT/SIGTERM. Returns the exit code."""
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="edgemesh-dev-")
        data_dir = Path(tmp.name)
    dev = DevDeployment(topology, data_dir, state_file, available, tls=tls)

    def _on_signal(signum: int, _frame: object) -> None:
        dev.request_stop()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            dev.startup()
        except LaunchError as exc:
            print(f"edgemesh dev: {exc}", file=sys.stderr)
            return 1
        print(dev.summary(), flush=True)
        try:
            return dev.run()
        finally:
            print("edgemesh dev: stopping", file=sys.stderr, flush=True)
            dev.shutdown()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if tmp is not None:
            tmp.cleanup()
