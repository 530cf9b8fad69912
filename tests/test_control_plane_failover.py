"""Failover with real processes: a NATS supercluster (eu, us, ap) and three control-plane
instances (`edgemesh control-plane` subprocesses), probed, killed and restarted.

This module's regions have no edges, so only the NATS probes run (the edge probes are
covered where edges exist). Tests run in order and share the deployment.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator

import pytest

from control_plane.observation import CheckResult
from mesh.control import REGION_STATES, RegionStates
from mesh.process import FreePorts
from mesh.supercluster import Supercluster
from mesh.topology import parse_topology
from tests.conftest import NatsClients, start_supercluster
from tests.cp_cluster import ControlPlanes, addresses, dns_answer, dump, views_of, wait_for
from tests.geoip_fixture import CLIENTS, build_city_db, geo_topology

REGIONS = ("eu", "us", "ap")
PARIS = CLIENTS["paris"].address
TOKYO = CLIENTS["tokyo"].address

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supercluster]:
    sc = start_supercluster(tmp_path_factory.mktemp("sc"), edges_per_region=0)
    try:
        yield sc
    finally:
        sc.stop()


@pytest.fixture(scope="module")
async def cps(
    supercluster: Supercluster, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ControlPlanes]:
    work = tmp_path_factory.mktemp("cp")
    topology = geo_topology(supercluster.topology)
    planes = ControlPlanes(topology, supercluster.secrets, work, build_city_db(work / "city.mmdb"))
    try:
        for r in REGIONS:
            planes.start(r)
        await planes.wait_ready(REGIONS)
        yield planes
    finally:
        await planes.aclose()


async def test_all_healthy_route_dns_metrics_and_status(cps: ControlPlanes) -> None:
    async def all_healthy() -> bool:
        views = await views_of(cps, REGIONS)
        return all(set(v.values()) == {"healthy"} for v in views.values())

    await wait_for(all_healthy, 30, "every region healthy on every instance")
    for r in REGIONS:
        route = await cps.get(r, f"/v1/route?ip={PARIS}")
        assert route["region"] == "eu" and route["located"] is True
        assert [f["region"] for f in route["fallbacks"]] == ["us", "ap"]
        assert (await cps.get(r, f"/v1/route?ip={TOKYO}"))["region"] == "ap"
    assert dns_answer(cps, "us", PARIS) == addresses("eu")
    # NATS probes of eu, as us sees them: every check answered.
    detail = await cps.get("us", "/v1/regions/eu")
    assert set(detail["checks"]) == {"nats_healthz", "jsz", "gatewayz"}
    assert all(c["ok"] for c in detail["checks"].values()), dump(detail)
    assert detail["recent"] and CheckResult.from_dict(detail["recent"][0]["checks"][0]).ok
    metrics = (await cps.http.get(cps.url("ap") + "/metrics")).text
    assert 'edgemesh_cp_region_state{region="eu",state="healthy"} 1' in metrics
    assert "edgemesh_cp_nats_connected 1" in metrics
    assert (await cps.http.get(cps.url("ap") + "/docs")).status_code == 200
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mesh.cli", "status", "--topology", str(cps.topology_file)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()[2:]]
    assert [(row[0], row[1]) for row in rows] == [(r, "healthy") for r in REGIONS]


async def test_bad_requests_have_stable_codes(cps: ControlPlanes) -> None:
    r = await cps.http.get(cps.url("us") + "/v1/route?ip=not-an-ip")
    assert r.status_code == 400 and r.json()["error"]["code"] == 40000
    r = await cps.http.get(cps.url("us") + "/v1/regions/mars")
    assert r.status_code == 404 and r.json()["error"]["code"] == 40400
    unknown = await cps.get("us", "/v1/route?ip=100.64.0.77")
    assert unknown["region"] == "eu" and unknown["located"] is False  # the default region


async def test_a_browser_on_any_origin_may_read_the_route(cps: ControlPlanes) -> None:
    page = {"Origin": "https://app.example.com"}
    r = await cps.http.get(cps.url("ap") + f"/v1/route?ip={PARIS}", headers=page)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    # Only the route: the operator API is not opened to pages.
    r = await cps.http.get(cps.url("ap") + "/v1/regions", headers=page)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_one_observers_cut_view_takes_nothing_down(cps: ControlPlanes) -> None:
    # ap's instance restarts with eu's NATS monitoring pointed at closed ports: ap alone
    # sees eu failing round after round.
    doc = json.loads(cps.topology.to_json())
    free = FreePorts()
    for server in doc["regions"][0]["nats"]:
        server["monitor_port"] = free()
    cut = cps.write_topology(parse_topology(doc), "topology-ap-cut.json")
    cps.stop("ap")
    cps.start("ap", topology_file=cut)
    try:

        async def ap_votes_eu_down_for_a_while() -> bool:
            votes = (await cps.get("us", "/v1/regions/eu"))["votes"]
            ap = next(v for v in votes if v["observer"] == "ap")
            return bool(ap["says"] == "down" and ap["counted"] and ap["fail_streak"] >= 6)

        await wait_for(ap_votes_eu_down_for_a_while, 40, "ap voting eu down for 3 rounds")
        for r in REGIONS:
            assert (await cps.states(r))["eu"] != "down"
        events = (await cps.get("us", "/v1/events"))["events"]
        assert not [e for e in events if e["region"] == "eu" and e["state"] == "down"]
    finally:
        cps.stop("ap")
        cps.start("ap")
    await cps.wait_ready(REGIONS)


async def test_killing_eu_nats_fails_over_to_us(
    cps: ControlPlanes, supercluster: Supercluster, nats_client: NatsClients
) -> None:
    nc = await nats_client("us", user="control")
    announced: asyncio.Queue[RegionStates] = asyncio.Queue()

    async def on_states(msg: object) -> None:
        await announced.put(RegionStates.decode(msg.data))  # type: ignore[attr-defined]

    await nc.subscribe(REGION_STATES, cb=on_states)
    supercluster.kill_region("eu")

    async def eu_down_on_us_and_ap() -> bool:
        views = await views_of(cps, ("us", "ap"))
        return all(v["eu"] == "down" for v in views.values())

    took = await wait_for(eu_down_on_us_and_ap, 15, "eu down on us and ap")
    print(f"eu declared down on us and ap {took:.1f}s after the kill")
    for r in ("us", "ap"):
        route = await cps.get(r, f"/v1/route?ip={PARIS}")
        assert route["region"] == "us" and [f["region"] for f in route["fallbacks"]] == ["ap"]
        assert dns_answer(cps, r, PARIS) == addresses("us")
        events = (await cps.get(r, "/v1/events"))["events"]
        down = [e for e in events if e["region"] == "eu" and e["state"] == "down"]
        assert len(down) == 1, dump(events)
        said = {v["observer"]: v for v in down[0]["votes"] if v["counted"]}
        assert {"us", "ap"} <= set(said) and all(v["says"] == "down" for v in said.values())
        assert all(v["fail_streak"] >= 3 for v in said.values())

    async def announced_eu_down() -> bool:
        while not announced.empty():
            if announced.get_nowait().states.get("eu") == "down":
                return True
        return False

    await wait_for(announced_eu_down, 10, "an announcement of eu down on em.ctl.regions")


async def test_eu_returns_only_after_the_up_threshold(
    cps: ControlPlanes, supercluster: Supercluster
) -> None:
    supercluster.start_region("eu")

    async def eu_serving_on_us_and_ap() -> bool:
        views = await views_of(cps, ("us", "ap"))
        return all(v["eu"] in ("healthy", "degraded") for v in views.values())

    await wait_for(eu_serving_on_us_and_ap, 60, "eu back on us and ap")
    for r in ("us", "ap"):
        events = (await cps.get(r, "/v1/events"))["events"]
        up = next(e for e in events if e["region"] == "eu" and e["previous"] == "down")
        counted = [v for v in up["votes"] if v["counted"] and v["says"] == "up"]
        assert len(counted) >= 2 and all(v["ok_streak"] >= 6 for v in counted), dump(up)
        assert (await cps.get(r, f"/v1/route?ip={PARIS}"))["region"] == "eu"
    await cps.wait_ready(REGIONS)


async def test_drain_and_restore_everywhere_and_across_restarts(cps: ControlPlanes) -> None:
    key = cps.api_key
    assert (await cps.post("us", "/v1/regions/eu/drain")).status_code == 401
    r = await cps.post("us", "/v1/regions/eu/drain", key="dev:" + "x" * 30)
    assert r.status_code == 403 and r.json()["error"]["code"] == 40300
    assert (await cps.post("us", "/v1/regions/mars/drain", key=key)).status_code == 404
    r = await cps.post("us", "/v1/regions/eu/drain", key=key)
    assert r.status_code == 200 and r.json()["state"] == "draining", r.text

    async def eu_draining_everywhere() -> bool:
        views = await views_of(cps, REGIONS)
        return all(v["eu"] == "draining" for v in views.values())

    await wait_for(eu_draining_everywhere, 10, "eu draining on every instance")
    assert (await cps.get("ap", f"/v1/route?ip={PARIS}"))["region"] == "us"
    assert dns_answer(cps, "ap", PARIS) == addresses("us")

    # Every instance restarts at once: only the persisted drain can bring it back.
    cps.stop_all()
    for region in REGIONS:
        cps.start(region)
    await cps.wait_ready(REGIONS)
    await wait_for(eu_draining_everywhere, 15, "eu still draining after restarting all")

    # The last serving region cannot be drained.
    assert (await cps.post("eu", "/v1/regions/us/drain", key=key)).status_code == 200
    r = await cps.post("eu", "/v1/regions/ap/drain", key=key)
    assert r.status_code == 409 and r.json()["error"]["code"] == 40900

    for region in ("eu", "us"):
        r = await cps.post("ap", f"/v1/regions/{region}/restore", key=key)
        assert r.status_code == 200, r.text

    async def all_serving_everywhere() -> bool:
        views = await views_of(cps, REGIONS)
        return all(s in ("healthy", "degraded") for v in views.values() for s in v.values())

    await wait_for(all_serving_everywhere, 15, "every region back on every instance")
    events = (await cps.get("eu", "/v1/events"))["events"]
    assert any(e["state"] == "draining" and e["region"] == "eu" for e in events)


async def test_flapping_region_changes_are_bounded_by_hold_down(
    cps: ControlPlanes, supercluster: Supercluster
) -> None:
    # Instances that react to a single failed or good round, allowed 2 changes per 10 min.
    cps.stop_all()
    flappy = ["--down-after", "1", "--up-after", "1", "--hold-down-max-changes", "2"]
    flappy += ["--hold-down-window-s", "600"]
    for r in REGIONS:
        cps.start(r, extra=flappy)
    await cps.wait_ready(REGIONS)
    eu = next(h.process for h in supercluster.servers.values() if h.region.name == "eu")
    try:
        # eu's NATS hangs, then answers, 2.5 s each, three times: long enough for every
        # observer to see each phase (a round takes up to 1 s + the probe timeout). The
        # third time the budget of 2 changes is spent: eu may go down, not come back.
        for _ in range(3):
            eu.signal(signal.SIGSTOP)
            await asyncio.sleep(2.5)
            eu.signal(signal.SIGCONT)
            await asyncio.sleep(2.5)
    finally:
        eu.signal(signal.SIGCONT)
    events = (await cps.get("us", "/v1/events"))["events"]
    changes = [e for e in events if e["region"] == "eu" and e["kind"] == "state_change"]
    assert any(e["state"] == "down" for e in changes), dump(events)
    assert len(changes) <= 2 + 2, dump(changes)
    assert any(e["kind"] == "held_down" and e["region"] == "eu" for e in events)
