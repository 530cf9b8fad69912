"""Real edge nodes for a supercluster, and a small WebSocket client, for tests.

Usage in a test module (module-scoped, over the module's ``supercluster``)::

    from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture

    edges = edges_fixture(env={"EDGEMESH_MAX_CONNECTIONS": "10"})  # or edges_fixture()

    async def test_x(edges: EdgeCluster) -> None:
        async with WsClient.open(edges.ws_url("eu", edges.token("alice"))) as c:
            assert (await c.request({"type": "ping"}))["type"] == "pong"

Each edge is ``python -m mesh.cli edge ...`` (the same command `edgemesh dev` runs),
bound to the topology's free port, stopped by its pid at teardown. Per-region
environment variables set limits (``EDGEMESH_<LIMIT>``, see edge/limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from edge.capabilities import Capabilities
from edge.tokens import KeyRing
from mesh.process import LaunchError, ManagedProcess
from mesh.secrets import write_secrets
from mesh.supercluster import Supercluster
from mesh.topology import Edge

ALL_OPS = ["subscribe", "publish", "history", "presence"]


class EdgeProcess:
    def __init__(
        self,
        cluster: EdgeCluster,
        region: str,
        edge: Edge,
        env: dict[str, str],
        log_level: str = "info",
    ) -> None:
        self.region = region
        self.edge = edge
        argv = [sys.executable, "-m", "mesh.cli", "edge"]
        argv += ["--topology", str(cluster.topology_path), "--secrets", str(cluster.secrets_path)]
        argv += ["--region", region, "--edge", edge.name, "--log-level", log_level]
        log = cluster.data_dir / "logs" / f"{edge.name}.log"
        self.process = ManagedProcess(f"edge {edge.name}", argv, log, env)

    @property
    def url(self) -> str:
        return self.edge.url

    @property
    def ws_url(self) -> str:
        return self.edge.ws_url


class EdgeCluster:
    """One edge process per topology edge (or the regions named), on a running supercluster."""

    def __init__(
        self,
        sc: Supercluster,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        region_env: Mapping[str, Mapping[str, str]] | None = None,
        log_level: str = "info",
    ) -> None:
        self.sc = sc
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.topology_path = data_dir / "topology.json"
        self.secrets_path = data_dir / "secrets.json"
        self.topology_path.write_text(sc.topology.to_json())
        write_secrets(sc.secrets.for_role("edge"), self.secrets_path)  # an edge's part only
        self.api_key = sc.secrets.api_keys[0]
        self.keys = KeyRing.from_pairs(sc.secrets.api_keys)
        self.edges: dict[str, EdgeProcess] = {}
        for region in sc.topology.regions:
            penv = dict(os.environ)
            penv.pop("EDGEMESH_KEYS", None)
            penv.update(env or {})
            penv.update((region_env or {}).get(region.name, {}))
            for e in region.edges:
                self.edges[e.name] = EdgeProcess(self, region.name, e, penv, log_level)

    # -- processes -----------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        try:
            for p in self.edges.values():
                p.process.start()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for p in self.edges.values():
            p.process.stop()

    def wait_ready(self, timeout: float = 60.0, names: list[str] | None = None) -> None:
        """Until every edge (or those named) answers `/readyz` with 200."""
        pending = [self.edges[n] for n in (names or list(self.edges))]
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while pending:
                for p in list(pending):
                    if not p.process.running():
                        raise LaunchError(f"{p.edge.name} exited: {p.process.log_tail(20)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if http.get(f"{p.url}/readyz").status_code == 200:
                            pending.remove(p)
                if pending and time.monotonic() > deadline:
                    tails = "; ".join(p.process.log_tail(10) for p in pending)
                    raise LaunchError(f"edges not ready in {timeout}s: {tails}")
                if pending:
                    time.sleep(0.1)

    # -- addresses and credentials ---------------------------------------------------

    def edge(self, region: str) -> EdgeProcess:
        return next(p for p in self.edges.values() if p.region == region)

    def url(self, region: str) -> str:
        return self.edge(region).url

    def ws_url(self, region: str, token: str | None = None) -> str:
        base = self.edge(region).ws_url
        return f"{base}?token={token}" if token is not None else base

    def token(
        self,
        client_id: str = "tester",
        caps: Mapping[str, list[str]] | None = None,
        ttl_s: float = 3600,
        now: float | None = None,
    ) -> str:
        key_id = self.api_key.split(":", 1)[0]
        capabilities = Capabilities.parse(dict(caps) if caps is not None else {"*": ALL_OPS})
        token, _ = self.keys.mint(
            key_id, client_id, capabilities, time.time() if now is None else now, ttl_s
        )
        return token

    def metrics(self, region: str) -> dict[str, float]:
        """`/metrics` of a region's edge as {"name{labels}": value}."""
        text = httpx.get(f"{self.url(region)}/metrics", timeout=5).text
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


async def restart_edge(edges: EdgeCluster, region: str) -> None:
    """Start a region's edge again after a test stopped or killed it; wait until ready."""
    p = edges.edge(region).process
    await asyncio.to_thread(p.wait_or_kill, 30)
    p.start()
    await asyncio.to_thread(edges.wait_ready, 60, [edges.edge(region).edge.name])


def start_edges(
    sc: Supercluster,
    data_dir: Path,
    env: Mapping[str, str] | None = None,
    region_env: Mapping[str, Mapping[str, str]] | None = None,
) -> EdgeCluster:
    cluster = EdgeCluster(sc, data_dir, env, region_env)
    cluster.start()
    return cluster


def edges_fixture(
    env: Mapping[str, str] | None = None,
    region_env: Mapping[str, Mapping[str, str]] | None = None,
) -> Any:
    """A module-scoped `edges` fixture over the module's `supercluster`: in a test module,
    ``edges = edges_fixture(env={...})``."""

    @pytest.fixture(scope="module")
    def edges(
        supercluster: Supercluster, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[EdgeCluster]:
        cluster = start_edges(supercluster, tmp_path_factory.mktemp("edges"), env, region_env)
        try:
            yield cluster
        finally:
            cluster.stop()

    return edges


edges = edges_fixture()  # one edge per region, default limits (for `pytest_plugins`)


class WsClient:
    """A protocol v1 client over the `websockets` library, for tests."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.connected: dict[str, Any] = {}
        self.backlog: list[dict[str, Any]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, url: str, expect_connected: bool = True, **options: Any
    ) -> AsyncIterator[WsClient]:
        options.setdefault("max_size", None)
        options.setdefault("compression", None)
        options.setdefault("open_timeout", 20)
        # A client that left replies unread has paused reading, so it cannot see the
        # server's answer to its close frame: don't wait the library's 10 s for it.
        options.setdefault("close_timeout", 1)
        async with connect(url, **options) as ws:
            client = cls(ws)
            if expect_connected:
                first = await client.recv()
                assert first["type"] == "connected", first
                client.connected = first
            yield client

    async def send(self, frame: Mapping[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, within: float = 20.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), within)
        doc: dict[str, Any] = json.loads(raw)
        return doc

    async def request(self, frame: Mapping[str, Any], within: float = 20.0) -> dict[str, Any]:
        """Send `frame` with a fresh id; return the reply with that id (others are kept)."""
        rid = next(self._ids)
        await self.send({**frame, "id": rid})
        deadline = time.monotonic() + within
        kept: list[dict[str, Any]] = []
        try:
            while True:
                raw = await asyncio.wait_for(self.ws.recv(), max(0.01, deadline - time.monotonic()))
                doc: dict[str, Any] = json.loads(raw)
                if doc.get("id") == rid:
                    return doc
                kept.append(doc)
        finally:
            self.backlog.extend(kept)

    async def subscribe(self, channel: str, **extra: Any) -> dict[str, Any]:
        reply = await self.request({"type": "subscribe", "channel": channel, **extra})
        assert reply["type"] == "subscribed", reply
        return reply

    async def messages(self, n: int, within: float = 60.0) -> list[dict[str, Any]]:
        """The next `n` `message` frames (other frames are skipped)."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + within
        while len(out) < n:
            doc = await self.recv(max(0.01, deadline - time.monotonic()))
            if doc["type"] == "message":
                out.append(doc)
        return out
