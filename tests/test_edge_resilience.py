"""An edge outlives its NATS server, follows the control plane's region states, drains."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed

from edge.settings import EdgeSettings
from mesh.control import REGION_STATES, RegionState, RegionStates
from mesh.supercluster import Supercluster
from tests.conftest import NatsClients
from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture

ENV = {"EDGEMESH_PUBLISH_RATE_PER_S": "100000", "EDGEMESH_PUBLISH_BURST": "100000"}


edges = edges_fixture(env=ENV)


async def until_closed(c: WsClient) -> tuple[int | None, list[dict[str, Any]]]:
    frames: list[dict[str, Any]] = list(c.backlog)
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(c.ws.recv(), 20)))
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd else None), frames


async def readyz(edges: EdgeCluster, region: str) -> int:
    async with httpx.AsyncClient(timeout=5) as http:
        try:
            return (await http.get(f"{edges.url(region)}/readyz")).status_code
        except httpx.HTTPError:
            return 0


async def readyz_detail(edges: EdgeCluster, region: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as http:
        detail: dict[str, Any] = (await http.get(f"{edges.url(region)}/readyz")).json()
        return detail


async def wait_status(edges: EdgeCluster, region: str, status: int, within: float) -> None:
    deadline = time.monotonic() + within
    while await readyz(edges, region) != status:
        assert time.monotonic() < deadline, f"/readyz of {region} never became {status}"
        await asyncio.sleep(0.1)


async def test_publishes_get_an_answer_while_nats_dies_and_the_edge_recovers(
    edges: EdgeCluster, supercluster: Supercluster
) -> None:
    (server,) = [h.server.name for h in supercluster.servers.values() if h.region.name == "eu"]
    timeout = 5.0 + 2.0  # the mesh publish timeout, plus slack for a slow machine
    answers: dict[int, tuple[str, int | None, float]] = {}
    sent: dict[int, float] = {}
    all_answered = asyncio.Event()
    async with WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub:

        async def read() -> None:
            while True:
                doc = json.loads(await pub.ws.recv())
                if doc["type"] in ("ack", "nack"):
                    code = doc.get("error", {}).get("code")
                    answers[doc["id"]] = (doc["type"], code, time.monotonic() - sent[doc["id"]])
                    if len(answers) == 300:
                        all_answered.set()

        reader = asyncio.create_task(read())
        try:
            for i in range(300):
                if i == 100:
                    supercluster.kill_server(server)
                sent[i] = time.monotonic()
                await pub.send({"type": "publish", "id": i, "channel": "outage", "data": i})
                await asyncio.sleep(0.01)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_answered.wait(), 2 * timeout)
        finally:
            reader.cancel()
        assert sorted(answers) == list(range(300)), "every publish gets an ack or a nack"
        assert all(kind == "ack" or code == 50300 for kind, code, _ in answers.values())
        assert max(t for _, _, t in answers.values()) < timeout
        assert any(kind == "nack" for kind, _, _ in answers.values())
        assert await readyz(edges, "eu") == 503
    supercluster.start_server(server)
    await asyncio.to_thread(supercluster.wait_formed, 60)
    await wait_status(edges, "eu", 200, 60)
    # The same edge process serves again: publish in eu, delivered in eu and us.
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("sub-eu"))) as s_eu,
        WsClient.open(edges.ws_url("us", edges.token("sub-us"))) as s_us,
        WsClient.open(edges.ws_url("eu", edges.token("pub2"))) as pub,
    ):
        await s_eu.subscribe("after")
        await s_us.subscribe("after")
        deadline = time.monotonic() + 30
        while True:  # JetStream may take a moment to elect the stream leader again
            ack = await pub.request({"type": "publish", "channel": "after", "data": 1})
            if ack["type"] == "ack" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert ack["type"] == "ack", ack
        assert (await s_eu.messages(1))[0]["data"] == 1
        assert (await s_us.messages(1))[0]["data"] == 1


async def announce(nc_factory: NatsClients, states: dict[str, RegionState]) -> None:
    nc = await nc_factory("us", "control")
    msg = RegionStates("us", int(time.time() * 1000), states)
    await nc.publish(REGION_STATES, msg.encode())
    await nc.flush()


async def test_region_draining_sends_clients_elsewhere(
    edges: EdgeCluster, nats_client: NatsClients
) -> None:
    healthy = {r: RegionState.HEALTHY for r in ("eu", "us", "ap")}
    await announce(nats_client, {**healthy, "ap": RegionState.DOWN})
    deadline = time.monotonic() + 20
    while True:
        async with WsClient.open(edges.ws_url("eu", edges.token("c"))) as c:
            if c.connected["fallback_regions"] == ["us"] or time.monotonic() > deadline:
                break
        await asyncio.sleep(0.1)
    assert c.connected["fallback_regions"] == ["us"]  # ap is down: not offered
    async with WsClient.open(edges.ws_url("eu", edges.token("victim"))) as victim:
        await announce(nats_client, {**healthy, "eu": RegionState.DRAINING})
        close, frames = await until_closed(victim)
    assert close == 4503
    assert frames[-1] == {
        "type": "disconnect",
        "reason": "draining",
        "reconnect": True,
        "retry_after_ms": 500,
        "fallback_regions": ["us", "ap"],
    }
    async with WsClient.open(edges.ws_url("eu", edges.token("late")), expect_connected=False) as c:
        close, frames = await until_closed(c)
    assert close == 4503 and frames[0]["reason"] == "draining"
    r = await readyz_detail(edges, "eu")
    assert r["region_state"] == "draining" and r["accepting_connections"] is False
    await announce(nats_client, healthy)
    deadline = time.monotonic() + 20
    while not (await readyz_detail(edges, "eu"))["accepting_connections"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    async with WsClient.open(edges.ws_url("eu", edges.token("back"))) as c:
        assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_sigterm_drains_with_disconnect_frames(edges: EdgeCluster) -> None:
    proc = edges.edge("ap").process
    # The edge ends within its documented bound or exits with OVERRUN_EXIT_CODE then.
    bound = EdgeSettings.from_env(ENV).drain.exit_within_s
    async with (
        WsClient.open(edges.ws_url("ap", edges.token("d1"))) as c1,
        WsClient.open(edges.ws_url("ap", edges.token("d2"))) as c2,
    ):
        await c1.subscribe("x")
        signalled = time.monotonic()
        proc.signal(signal.SIGTERM)
        for c in (c1, c2):
            close, frames = await until_closed(c)
            assert close == 1001
            assert frames[-1]["type"] == "disconnect" and frames[-1]["reason"] == "shutdown"
            assert frames[-1]["fallback_regions"] == ["eu", "us"]
    # (plus a margin for this process to notice, on a loaded machine)
    deadline = signalled + bound + 5
    while proc.running():
        assert time.monotonic() < deadline, f"edge still running: {proc.log_tail(20)}"
        await asyncio.sleep(0.05)
    assert proc.exit_code() == 0, f"exit {proc.exit_code()}: {proc.log_tail(20)}"
