"""Resume benchmark: subscribe with a cursor 1,000 messages behind, until the first live
message, on the same region's edge and on another region's edge.

    python bench/resume.py [--behind 1000] [--trials 5]

Starts a local supercluster (eu, us, ap; one nats-server each) and one real edge per
region. Per trial: a client subscribed on the eu edge takes the cursor of a message on a
fresh channel and leaves; `behind` messages are published in eu; a client then sends
`subscribe` with `from.cursor` to the eu edge (same region: replay from the stream) or the
us edge (other region: replay from the us mirror of eu) while one live message is
published right after. Printed per case (median over trials): time to `subscribed`,
time to the last replayed message, time to the first live message, and replayed
messages per second. Times include the client's JSON parsing (websockets library).
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.pki import issue_local_pki
from mesh.process import FreePorts
from mesh.secrets import generate_secrets
from mesh.supercluster import Supercluster
from mesh.topology import local_topology
from tests.edge_fixture import EdgeCluster, WsClient
from tests.test_recovery import publish_many

ENV = {
    "EDGEMESH_LOG_LEVEL": "warning",
    "EDGEMESH_PUBLISH_RATE_PER_S": "1000000",
    "EDGEMESH_PUBLISH_BURST": "1000000",
}


async def trial(edges: EdgeCluster, resume_region: str, behind: int, n: int) -> dict[str, float]:
    ch = f"bench:resume:{resume_region}:{n}:{time.time_ns()}"
    async with (
        WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub,
        WsClient.open(edges.ws_url("eu", edges.token("sub"))) as first,
    ):
        await first.subscribe(ch)
        await publish_many(pub, ch, "warm", 1)
        cursor = (await first.messages(1))[-1]["cursor"]
    async with WsClient.open(edges.ws_url("eu", edges.token("pub"))) as pub:
        await publish_many(pub, ch, "behind", behind)
        async with WsClient.open(edges.ws_url(resume_region, edges.token("sub"))) as sub:
            t0 = time.perf_counter()
            await sub.send(
                {"type": "subscribe", "id": "r", "channel": ch, "from": {"cursor": cursor}}
            )
            await pub.send(
                {"type": "publish", "id": "live", "channel": ch, "data": {"tag": "live"}}
            )
            t_subscribed = t_replayed = t_live = 0.0
            replayed = 0
            while not t_live:
                doc = await sub.recv(60)
                now = time.perf_counter() - t0
                if doc.get("type") == "subscribed":
                    t_subscribed = now
                    assert doc.get("recovered") is True, doc
                elif doc.get("type") == "message":
                    if doc["data"]["tag"] == "live":
                        t_live = now
                    else:
                        replayed += 1
                        t_replayed = now
            assert replayed == behind, f"replayed {replayed} of {behind}"
    return {
        "subscribed_ms": t_subscribed * 1000,
        "replayed_ms": t_replayed * 1000,
        "live_ms": t_live * 1000,
        "replay_msgs_per_s": behind / t_replayed,
    }


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="edgemesh-bench-") as tmp:
        topology = issue_local_pki(local_topology(FreePorts(), 1, 1), Path(tmp) / "tls")
        sc = Supercluster(topology, generate_secrets("bench"), Path(tmp))
        sc.start(60)
        edges = EdgeCluster(sc, Path(tmp) / "edges", env=ENV)
        try:
            edges.start()
            print(
                f"resume: cursor {args.behind} messages behind (published in eu), "
                f"median of {args.trials} trials"
            )
            print(
                f"{'resume on':<22} {'subscribed ms':>13} {'replayed ms':>11} "
                f"{'first live ms':>13} {'replayed msg/s':>14}"
            )
            for label, region in (
                ("eu edge (same region)", "eu"),
                ("us edge (other region)", "us"),
            ):
                runs = [await trial(edges, region, args.behind, i) for i in range(args.trials)]

                def med(k: str, runs: list[dict[str, float]] = runs) -> float:
                    return statistics.median(r[k] for r in runs)

                print(
                    f"{label:<22} {med('subscribed_ms'):>13.1f} {med('replayed_ms'):>11.1f} "
                    f"{med('live_ms'):>13.1f} {med('replay_msgs_per_s'):>14.0f}",
                    flush=True,
                )
        finally:
            edges.stop()
            sc.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--behind", type=int, default=1000)
    p.add_argument("--trials", type=int, default=5)
    asyncio.run(bench(p.parse_args()))


if __name__ == "__main__":
    main()
