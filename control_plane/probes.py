"""The prober: one round of probes of every region, all concurrent, each with a timeout.

Per region: every NATS server's monitoring (`/healthz`, `/jsz` with stream details for
the mirrors, `/gatewayz`), every edge's `/readyz` and a WebSocket handshake with a
token minted from an API key, and the synthetic publish (see
:mod:`control_plane.synthetic`). A probe that does not answer within the timeout has
failed; nothing here can hold a round up for longer than the timeout.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.asyncio.client import connect as ws_connect

from control_plane.classify import (
    GATEWAYZ,
    JSZ,
    NATS_HEALTHZ,
    PUBLISH,
    READYZ,
    WEBSOCKET,
    RegionProbe,
)
from control_plane.observation import CheckResult
from control_plane.settings import ProbeSettings
from control_plane.subjects import probe_channel_glob
from control_plane.tokens import ApiKey, mint_token
from mesh.topology import Edge, NatsServer, Region, Topology

PublishProbe = Callable[[Region, Edge], Awaitable[CheckResult]]

_TOKEN_TTL_S = 300


class _Unreachable(Exception):
    pass


def read_jsz(code: int, body: Any, regions: tuple[str, ...]) -> tuple[bool, str, dict[str, float]]:
    """(ok, detail, mirrors) from a server's `/jsz?accounts=true&streams=true` answer.

    ok: JetStream is enabled and there is a meta leader. mirrors: origin region -> seconds
    since the mirror of its stream (`EM_<origin>`) hosted on this server heard from it."""
    if code != 200 or not isinstance(body, dict):
        return False, f"{code}", {}
    if body.get("disabled") or "config" not in body:
        return False, "jetstream disabled", {}
    mirrors: dict[str, float] = {}
    for account in body.get("account_details") or ():
        for stream in account.get("stream_detail") or ():
            mirror = stream.get("mirror") or {}
            origin = str(mirror.get("name", "")).removeprefix("EM_")
            if origin in regions and isinstance(mirror.get("active"), int):
                active_s = max(0.0, mirror["active"] / 1e9)
                mirrors[origin] = max(active_s, mirrors.get(origin, 0.0))
    if not (body.get("meta_cluster") or {}).get("leader"):
        return False, "no meta leader", mirrors
    return True, "", mirrors


def missing_gateways(code: int, body: Any, others: list[str]) -> tuple[str, ...]:
    """The regions among `others` a server's `/gatewayz` answer has no outbound gateway to."""
    out = set((body or {}).get("outbound_gateways") or {}) if code == 200 else set()
    return tuple(r for r in others if r not in out)


class Prober:
    def __init__(
        self,
        topology: Topology,
        observer: str,
        settings: ProbeSettings,
        http: httpx.AsyncClient,
        api_key: ApiKey | None,
        publish_probe: PublishProbe | None = None,
    ) -> None:
        self.topology = topology
        self.observer = observer
        self.settings = settings
        self.http = http
        self.api_key = api_key
        self.publish_probe = publish_probe

    async def round(self) -> dict[str, RegionProbe]:
        """Probe every region at once; returns each region's results."""
        probes = await asyncio.gather(*(self.region(r) for r in self.topology.regions))
        return {p.region: p for p in probes}

    async def region(self, region: Region) -> RegionProbe:
        server_tasks = [self._server(region, s) for s in region.nats]
        edge_tasks = [self._edge(region, e) for e in region.edges]
        servers, edges = await asyncio.gather(
            asyncio.gather(*server_tasks), asyncio.gather(*edge_tasks)
        )
        checks: list[CheckResult] = []
        unreachable: list[str] = []
        missing: dict[str, tuple[str, ...]] = {}
        mirrors: dict[str, float] = {}
        for s, (s_checks, reached, s_missing, s_mirrors) in zip(region.nats, servers, strict=True):
            checks += s_checks
            if not reached:
                unreachable.append(s.name)
            if s_missing:
                missing[s.name] = s_missing
            for origin, active in s_mirrors.items():
                mirrors[origin] = max(active, mirrors.get(origin, 0.0))
        for e_checks in edges:
            checks += e_checks
        return RegionProbe(
            region.name,
            tuple(checks),
            tuple(s.name for s in region.nats),
            tuple(unreachable),
            missing,
            mirrors,
        )

    # -- NATS --------------------------------------------------------------------------

    async def _get(self, url: str) -> tuple[int, Any, float]:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                r = await self.http.get(url)
                body: Any = r.json() if r.content else None
        except (httpx.HTTPError, OSError, TimeoutError, ValueError) as exc:
            raise _Unreachable(type(exc).__name__) from None
        return r.status_code, body, (time.perf_counter() - start) * 1000

    async def _server(
        self, region: Region, s: NatsServer
    ) -> tuple[list[CheckResult], bool, tuple[str, ...], dict[str, float]]:
        base = self.topology.monitor_url(s)
        results = await asyncio.gather(
            self._get(f"{base}/healthz"),
            self._get(f"{base}/jsz?accounts=true&streams=true"),
            self._get(f"{base}/gatewayz"),
            return_exceptions=True,
        )
        reached = any(not isinstance(r, BaseException) for r in results)
        checks: list[CheckResult] = []
        missing: tuple[str, ...] = ()
        mirrors: dict[str, float] = {}
        health, jsz, gatewayz = results
        if isinstance(health, BaseException):
            checks.append(CheckResult(NATS_HEALTHZ, s.name, False, f"unreachable: {health}"))
        else:
            code, body, ms = health
            status = body.get("status") if isinstance(body, dict) else None
            ok = code == 200 and status == "ok"
            detail = "" if ok else f"{code} {(body or {}).get('error', status)}"
            checks.append(CheckResult(NATS_HEALTHZ, s.name, ok, detail, ms))
        if isinstance(jsz, BaseException):
            checks.append(CheckResult(JSZ, s.name, False, f"unreachable: {jsz}"))
        else:
            ok, detail, mirrors = read_jsz(jsz[0], jsz[1], self.topology.names)
            checks.append(CheckResult(JSZ, s.name, ok, detail, jsz[2]))
        if isinstance(gatewayz, BaseException):
            checks.append(CheckResult(GATEWAYZ, s.name, False, f"unreachable: {gatewayz}"))
        else:
            code, body, ms = gatewayz
            others = [r for r in self.topology.names if r != region.name]
            missing = missing_gateways(code, body, others)
            detail = f"no gateway to {', '.join(missing)}" if missing else ""
            checks.append(CheckResult(GATEWAYZ, s.name, not missing, detail, ms))
        return checks, reached, missing, mirrors

    # -- edges ----------------------------------------------------------------------

    async def _edge(self, region: Region, edge: Edge) -> list[CheckResult]:
        tasks: list[Awaitable[CheckResult]] = [self._readyz(edge)]
        if self.api_key is not None:
            tasks.append(self._websocket(edge, self.api_key))
            if self.publish_probe is not None:
                tasks.append(self._bounded(edge, self.publish_probe(region, edge)))
        return list(await asyncio.gather(*tasks))

    async def _bounded(self, edge: Edge, probe: Awaitable[CheckResult]) -> CheckResult:
        # The synthetic probe has its own timeout; this is the last line of defence.
        try:
            async with asyncio.timeout(self.settings.timeout_s * 2):
                return await probe
        except TimeoutError:
            return CheckResult(PUBLISH, edge.name, False, "timeout")

    async def _readyz(self, edge: Edge) -> CheckResult:
        try:
            code, _body, ms = await self._get(f"{edge.url}/readyz")
        except _Unreachable as exc:
            return CheckResult(READYZ, edge.name, False, f"unreachable: {exc}")
        return CheckResult(READYZ, edge.name, code == 200, "" if code == 200 else str(code), ms)

    async def _websocket(self, edge: Edge, key: ApiKey) -> CheckResult:
        token = mint_token(
            key,
            f"edgemesh-control-{self.observer}",
            {probe_channel_glob(): ["subscribe"]},
            int(time.time()),
            _TOKEN_TTL_S,
        )
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                async with ws_connect(
                    f"{edge.ws_url}?token={token}", open_timeout=None, close_timeout=0.2
                ) as ws:
                    first = json.loads(await ws.recv())
        except Exception as exc:  # any failure of the handshake is the probe's answer
            return CheckResult(WEBSOCKET, edge.name, False, f"{type(exc).__name__}: {exc}"[:200])
        ms = (time.perf_counter() - start) * 1000
        kind = first.get("type") if isinstance(first, dict) else None
        if kind == "connected":
            return CheckResult(WEBSOCKET, edge.name, True, "", ms)
        if kind == "disconnect" and first.get("reason") == "draining":
            # The edge took the handshake, checked our token and refuses clients because
            # the control plane said its region is down or drained: it works. Counting
            # this as a failure would keep a recovered region down for ever.
            return CheckResult(WEBSOCKET, edge.name, True, "refusing clients: draining", ms)
        return CheckResult(WEBSOCKET, edge.name, False, f"first frame {kind!r}", ms)
