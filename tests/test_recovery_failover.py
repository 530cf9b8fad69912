"""Issue 4: the eu region dies after acking 1,000 messages; a client that had seen 400 of
them resumes in us from the mirror and gets the other 600, and a publisher retrying in us
a message eu acked is acknowledged with eu's serial (`duplicate`). Then the us edge reports its
mirror of eu stale (`/readyz` detail and metrics), and fresh again once eu is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats.errors
from nats.js.client import JetStreamContext
from nats.js.errors import APIError

from mesh.settings import MeshSettings
from mesh.subjects import mirror_name
from mesh.supercluster import Supercluster
from tests.conftest import NatsClients
from tests.edge_fixture import EdgeCluster, WsClient, edges_fixture
from tests.test_recovery import publish_many

ENV = {"EDGEMESH_PUBLISH_RATE_PER_S": "1000000", "EDGEMESH_PUBLISH_BURST": "1000000"}
SETTLE_S = 30.0  # the longest the mirror may take to copy what eu acked (generous: 2 busy cores)


edges = edges_fixture(env=ENV)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    """Poll `check` until it holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        await asyncio.sleep(0.05)


async def last_seq_of(js: JetStreamContext, stream: str) -> int:
    """The stream's last seq, retrying while JetStream re-elects leaders after a kill."""
    for _ in range(300):
        try:
            return (await js.stream_info(stream)).state.last_seq
        except (nats.errors.Error, APIError, TimeoutError):
            await asyncio.sleep(0.1)
    raise AssertionError(f"no stream info for {stream}")


async def test_resume_in_us_after_eu_dies(
    supercluster: Supercluster, edges: EdgeCluster, nats_client: NatsClients
) -> None:
    ch = "failover:orders"
    us = await nats_client("us")
    js = us.jetstream(timeout=5)
    mirror = mirror_name("eu", "us")
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("sub"))) as sub,
        WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub,
    ):
        await sub.subscribe(ch)
        acks = await publish_many(pub, ch, "o", 1000)
        # A payment with an idempotency key, acked in eu: retried in us after the kill.
        paid = await pub.request(
            {"type": "publish", "channel": "failover:pay", "data": 1, "message_id": "pay-1"}
        )
        assert paid["type"] == "ack" and paid["serial"].startswith("eu:")
        # How far behind the mirror is the moment the last ack arrived (for the report).
        at_last_ack = (await js.stream_info(mirror)).state.last_seq
        cursor = (await sub.messages(400))[-1]["cursor"]  # it had seen 400, then went away
    seqs = [int(a["serial"].split(":")[1]) for a in acks]
    assert all(a["serial"].startswith("eu:") for a in acks) and seqs == sorted(seqs)
    behind_at_ack = sum(1 for s in seqs if s > at_last_ack)

    # The settle: until the us mirror holds the last acked message (or SETTLE_S), then
    # the kill of eu's nats-server and edge.
    paid_seq = int(paid["serial"].split(":")[1])

    async def mirrored_all() -> bool:
        return (await js.stream_info(mirror)).state.last_seq >= max(seqs[-1], paid_seq)

    t0 = time.monotonic()
    settled = True
    try:
        await until(mirrored_all, SETTLE_S, "the us mirror of eu holds every acked message")
    except AssertionError:
        settled = False  # measured below, and then asserted
    settle_s = time.monotonic() - t0
    supercluster.kill_region("eu")
    edges.edges["eu-e1"].process.kill()
    # What the mirror holds now is all there will be (copies in flight at the kill count).
    mirrored = await last_seq_of(js, mirror)
    unmirrored = sum(1 for s in seqs if s > mirrored)
    print(
        f"\nfailover: {unmirrored} of 1000 acked messages were not yet mirrored at the kill "
        f"(at the last ack {behind_at_ack} were not; then settle {settle_s:.2f} s, "
        f"{'reached' if settled else 'timed out'})"
    )
    assert unmirrored == 0 and mirrored >= paid_seq

    async with WsClient.open(edges.ws_url("us", edges.token("sub"))) as again:
        t0 = time.monotonic()
        reply = await again.subscribe(ch, **{"from": {"cursor": cursor}})
        took = time.monotonic() - t0
        # eu cannot confirm what it stored last: the edge must not claim a full recovery.
        assert reply["recovered"] is False
        got = await again.messages(600)
        # Exactly the other 600, in order, each once.
        assert [m["serial"] for m in got] == [a["serial"] for a in acks[400:]]
        assert [m["data"]["i"] for m in got] == list(range(400, 1000))
        print(f"failover: resumed {len(got)} messages from the us mirror, subscribe {took:.2f} s")
        # Still live in the surviving regions, and nothing else came in between (no
        # duplicate of a replayed message).
        async with WsClient.open(edges.ws_url("ap", edges.token("pub"))) as pub_ap:
            after = await publish_many(pub_ap, ch, "ap", 3)
        assert [m["serial"] for m in await again.messages(3)] == [a["serial"] for a in after]
    # The payer, failed over to us, retries its payment: eu is dead, but us's mirror of
    # eu holds the first copy, so the retry is acknowledged as it and not stored again.
    async with WsClient.open(edges.ws_url("us", edges.token("pub"))) as payer:
        retry = await payer.request(
            {"type": "publish", "channel": "failover:pay", "data": 1, "message_id": "pay-1"}
        )
    assert retry["type"] == "ack" and retry["duplicate"] is True, retry
    assert retry["serial"] == paid["serial"]


async def mirror_report(http: httpx.AsyncClient, edges: EdgeCluster, origin: str) -> Any:
    """(`/readyz` detail of the mirror of `origin`, `edgemesh_mirror_*` gauges) of the us edge."""
    readyz = (await http.get(f"{edges.url('us')}/readyz")).json()
    detail = next(m for m in readyz["mirrors"] if m["origin"] == origin)
    gauges: dict[str, float] = {}
    for line in (await http.get(f"{edges.url('us')}/metrics")).text.splitlines():
        key, _, value = line.rpartition(" ")
        if key.startswith("edgemesh_mirror_") and f'origin="{origin}"' in key:
            gauges[key.split("{")[0]] = float(value)
    return detail, gauges


async def test_the_edge_reports_the_mirror_of_a_dead_region_stale_until_it_is_back(
    supercluster: Supercluster, edges: EdgeCluster
) -> None:
    """Runs after the kill above. A mirror shows no error while its origin is gone, only
    `active` grows; the us edge says so in `/readyz` and `/metrics`, and recovers."""
    stale_after = MeshSettings().mirror_stale_after_s  # the edges run with the default
    if supercluster.servers["eu-n1"].process.running():
        supercluster.kill_region("eu")
    async with httpx.AsyncClient(timeout=5) as http:
        report: Any = None

        async def reported(stale: bool) -> bool:
            nonlocal report
            report = await mirror_report(http, edges, "eu")
            detail, gauges = report
            # (An unreadable mirror also counts as stale: wait for a real reading.)
            return bool(
                detail["stale"] is stale
                and detail["active_s"] is not None
                and gauges.get("edgemesh_mirror_stale") == stale
                and gauges.get("edgemesh_mirror_active_seconds", -1) >= 0
            )

        await until(lambda: reported(True), 60, "the us edge reports its eu mirror stale")
        detail, gauges = report
        # Contact lost for longer than the limit.
        assert detail["active_s"] > stale_after
        assert gauges["edgemesh_mirror_active_seconds"] > stale_after
        ap_detail, ap_gauges = await mirror_report(http, edges, "ap")
        assert ap_detail["stale"] is False and ap_gauges["edgemesh_mirror_stale"] == 0
        assert (await http.get(f"{edges.url('us')}/readyz")).status_code == 200  # still serves

        supercluster.start_region("eu")
        await until(lambda: reported(False), 120, "the us edge reports its eu mirror fresh")
        detail, gauges = report
        assert detail["active_s"] <= stale_after
        assert 0 <= gauges["edgemesh_mirror_active_seconds"] <= stale_after
