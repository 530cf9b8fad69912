"""Failover end to end: real edges (`edgemesh edge`), a real supercluster and three
control-plane instances. The edge probes (/readyz, WebSocket, synthetic publish across
regions) run for real; connected clients are told to leave a drained region.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from client import Client, ClientSettings
from control_plane.tokens import ApiKey, mint_token
from mesh.process import ManagedProcess
from mesh.supercluster import Supercluster
from tests.conftest import start_supercluster
from tests.cp_cluster import ControlPlanes, addresses, dns_answer, dump, views_of, wait_for
from tests.geoip_fixture import CLIENTS, build_city_db, geo_topology
from tests.js_client import run_js

REGIONS = ("eu", "us", "ap")
PARIS = CLIENTS["paris"].address

pytestmark = pytest.mark.timeout(240)


class Edges:
    def __init__(self, planes: ControlPlanes) -> None:
        self.planes = planes
        self.procs: dict[str, ManagedProcess] = {}

    def start(self, region: str) -> None:
        argv = [sys.executable, "-m", "mesh.cli", "edge", "--region", region]
        argv += ["--topology", str(self.planes.topology_file)]
        argv += ["--secrets", str(self.planes.edge_secrets_file)]
        log = self.planes.workdir / f"{region}-edge{len(self.procs)}.log"
        proc = ManagedProcess(f"edge {region}", argv, log)
        proc.start()
        self.procs[region] = proc

    def url(self, region: str) -> str:
        return self.planes.topology.region(region).edges[0].url

    def ws_url(self, region: str) -> str:
        return self.planes.topology.region(region).edges[0].ws_url

    async def wait_ready(self, regions: tuple[str, ...]) -> None:
        async def ready() -> bool:
            for r in regions:
                assert self.procs[r].running(), self.procs[r].log_tail(20)
                if (await self.planes.http.get(self.url(r) + "/readyz")).status_code != 200:
                    return False
            return True

        await wait_for(ready, 60, "edges ready")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supercluster]:
    sc = start_supercluster(tmp_path_factory.mktemp("sc"), edges_per_region=1)
    try:
        yield sc
    finally:
        sc.stop()


@pytest.fixture(scope="module")
async def deployment(
    supercluster: Supercluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ControlPlanes, Edges]]:
    work = tmp_path_factory.mktemp("cp")
    topology = geo_topology(supercluster.topology)
    planes = ControlPlanes(topology, supercluster.secrets, work, build_city_db(work / "city.mmdb"))
    edges = Edges(planes)
    try:
        for r in REGIONS:
            edges.start(r)
        await edges.wait_ready(REGIONS)
        for r in REGIONS:
            planes.start(r)
        await planes.wait_ready(REGIONS)
        yield planes, edges
    finally:
        await planes.aclose()
        edges.stop_all()


def token(planes: ControlPlanes, client: str) -> str:
    key = ApiKey.parse(planes.api_key)
    return mint_token(key, client, {"*": ["subscribe", "publish"]}, int(time.time()), 600)


async def restore_eu(planes: ControlPlanes) -> None:
    """Restore the drained eu and wait until every instance sees it serve again."""
    r = await planes.post("us", "/v1/regions/eu/restore", key=planes.api_key)
    assert r.status_code == 200, r.text

    async def eu_serving_everywhere() -> bool:
        views = await views_of(planes, REGIONS)
        return all(v["eu"] in ("healthy", "degraded") for v in views.values())

    await wait_for(eu_serving_everywhere, 15, "eu restored on every instance")


async def first_frame(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(10):
        frame: dict[str, Any] = json.loads(await ws.recv())
    return frame


async def test_edge_probes_pass_through_the_mesh(deployment: tuple[ControlPlanes, Edges]) -> None:
    planes, _ = deployment

    async def eu_fully_checked() -> bool:
        detail = await planes.get("us", "/v1/regions/eu")
        checks = detail["checks"]
        wanted = {"readyz", "websocket", "publish", "nats_healthz", "jsz", "gatewayz"}
        return set(checks) == wanted and all(c["ok"] for c in checks.values())

    await wait_for(eu_fully_checked, 30, "every check of eu passing, seen from us")
    detail = await planes.get("us", "/v1/regions/eu")
    assert detail["state"] == "healthy" and detail["edges"][0]["healthy"] is True
    publish = [c for c in detail["recent"][0]["checks"] if c["check"] == "publish"]
    assert publish[0]["ok"] and publish[0]["detail"] == "via us-e1", dump(publish)


async def test_drain_sends_clients_away_and_restore_brings_the_region_back(
    deployment: tuple[ControlPlanes, Edges],
) -> None:
    planes, edges = deployment
    async with ws_connect(f"{edges.ws_url('eu')}?token={token(planes, 'alice')}") as ws:
        hello = await first_frame(ws)
        assert hello["type"] == "connected" and hello["region"] == "eu"
        r = await planes.post("ap", "/v1/regions/eu/drain", key=planes.api_key)
        assert r.status_code == 200, r.text
        bye = await first_frame(ws)
        assert bye["type"] == "disconnect" and bye["reason"] == "draining", bye
        assert bye["reconnect"] is True and bye["fallback_regions"] == ["us", "ap"], bye
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(10):
                await ws.recv()
        assert ws.close_code == 4503
    # The client follows the first fallback and is served there.
    fallback = bye["fallback_regions"][0]
    async with ws_connect(f"{edges.ws_url(fallback)}?token={token(planes, 'alice')}") as ws:
        assert (await first_frame(ws))["region"] == "us"
    assert (await planes.get("eu", f"/v1/route?ip={PARIS}"))["region"] == "us"

    await restore_eu(planes)
    async with ws_connect(f"{edges.ws_url('eu')}?token={token(planes, 'bob')}") as ws:
        assert (await first_frame(ws))["region"] == "eu"


async def test_client_routes_by_the_control_plane_and_follows_a_drain(
    deployment: tuple[ControlPlanes, Edges],
) -> None:
    """The Python client asks the route API where to go (127.0.0.1 has no location: the
    default region, eu), then follows eu's drain to the first fallback and resumes its
    subscription there: every message once, in order. After the restore, the route names
    eu again and the client goes back, losing nothing either."""
    planes, edges = deployment
    route = await planes.get("ap", "/v1/route")
    settings = ClientSettings(reconnect_base_s=0.05, reconnect_max_s=0.5, route_refresh_s=1.0)
    sub_client = Client(
        token(planes, "carol"), route_urls=[planes.url("us"), planes.url("ap")], settings=settings
    )
    pub = Client(token(planes, "dave"), urls=[edges.ws_url("ap")], settings=settings)
    async with sub_client, pub:
        assert sub_client.connection is not None
        assert sub_client.connection.region == route["region"] == "eu"
        sub = await sub_client.subscribe("cp:client")
        n, sent = 200, []

        async def publish_all() -> None:
            for i in range(n):
                sent.append((await pub.publish("cp:client", i)).message_id)
                await asyncio.sleep(0.01)

        publishing = asyncio.create_task(publish_all())
        got = [await sub.next(30) for _ in range(50)]
        r = await planes.post("us", "/v1/regions/eu/drain", key=planes.api_key)
        assert r.status_code == 200, r.text
        try:
            got += [await sub.next(60) for _ in range(n - 50)]
            await publishing
            assert [m.data for m in got] == list(range(n))
            assert [m.id for m in got] == sent
            assert sub_client.connection is not None and sub_client.connection.region == "us"
            assert sub.resumes == 1 and sub.discontinuities == 0
        finally:
            publishing.cancel()
            await restore_eu(planes)

        async def back_in_eu() -> bool:
            c = sub_client.connection
            return c is not None and c.region == "eu"

        # Publishing goes on while the client moves back, and a little after.
        home = asyncio.create_task(wait_for(back_in_eu, 15, "the client back in eu"))
        more: list[str] = []
        while not home.done() or len(more) < 10:
            more.append((await pub.publish("cp:client", n + len(more))).message_id)
            await asyncio.sleep(0.02)
        await home
        # A few once it is back: they reach it only through its subscription resumed in eu.
        for _ in range(5):
            more.append((await pub.publish("cp:client", n + len(more))).message_id)
        assert [(await sub.next(30)).id for _ in more] == more
        assert sub.resumes == 2 and sub.discontinuities == 0


async def test_javascript_client_routes_leaves_a_drain_and_comes_back(
    deployment: tuple[ControlPlanes, Edges],
) -> None:
    """The same with the JavaScript client (tests/js/scenario.mjs `route`): eu first, us
    while eu is drained, eu again after the restore; every message once, in order."""
    planes, edges = deployment
    cfg = {
        "token": token(planes, "js"),
        "routeUrls": [planes.url("us"), planes.url("ap")],
        "ws": {"ap": edges.ws_url("ap")},
        "fallback": "us",
    }
    drained = False

    async def act(_: dict[str, Any]) -> None:
        nonlocal drained
        if not drained:
            r = await planes.post("us", "/v1/regions/eu/drain", key=planes.api_key)
            assert r.status_code == 200, r.text
            drained = True
        else:
            await restore_eu(planes)
            drained = False

    try:
        r = await run_js("route", cfg, act)
    finally:
        if drained:  # it stopped between the drain and the restore
            await restore_eu(planes)
    assert r["regions"] == ["eu", "us", "eu"]
    assert r["idsMatch"] and r["resumes"] == 2 and r["discontinuities"] == 0


async def test_killing_all_of_eu_fails_over_and_eu_returns_after_the_up_threshold(
    deployment: tuple[ControlPlanes, Edges], supercluster: Supercluster
) -> None:
    planes, edges = deployment
    supercluster.kill_region("eu")
    edges.procs["eu"].kill()

    async def eu_down_on_us_and_ap() -> bool:
        views = await views_of(planes, ("us", "ap"))
        return all(v["eu"] == "down" for v in views.values())

    took = await wait_for(eu_down_on_us_and_ap, 15, "eu down on us and ap")
    print(f"eu (nats and edge) declared down on us and ap {took:.1f}s after the kill")
    for r in ("us", "ap"):
        assert (await planes.get(r, f"/v1/route?ip={PARIS}"))["region"] == "us"
        assert dns_answer(planes, r, PARIS) == addresses("us")
        detail = await planes.get(r, "/v1/regions/eu")
        reasons = " ".join(detail["observed"]["reasons"])
        assert "readyz" in reasons and "synthetic publish" in reasons, dump(detail)
        events = (await planes.get(r, "/v1/events"))["events"]
        assert any(e["region"] == "eu" and e["state"] == "down" for e in events)

    supercluster.start_region("eu")
    edges.start("eu")

    async def eu_serving_on_us_and_ap() -> bool:
        views = await views_of(planes, ("us", "ap"))
        return all(v["eu"] in ("healthy", "degraded") for v in views.values())

    await wait_for(eu_serving_on_us_and_ap, 90, "eu back on us and ap")
    for r in ("us", "ap"):
        events = (await planes.get(r, "/v1/events"))["events"]
        up = next(e for e in events if e["region"] == "eu" and e["previous"] == "down")
        counted = [v for v in up["votes"] if v["counted"] and v["says"] == "up"]
        assert len(counted) >= 2 and all(v["ok_streak"] >= 6 for v in counted), dump(up)
    async with httpx.AsyncClient(timeout=5) as http:
        assert (await http.get(edges.url("eu") + "/readyz")).status_code == 200
