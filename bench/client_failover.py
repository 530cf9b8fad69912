"""What an application sees when an edge goes, through the Python client (client/).

    python bench/client_failover.py [--runs 5] [--rate 200]

A local supercluster (regions eu and us, one nats-server and one edge each). A publisher
client sends a numbered message every 1/rate s; a subscriber client receives them. Each
run takes one edge away while messages flow, and starts it again after the run:

- ``sub-term``: SIGTERM on the subscriber's edge (us): it drains, its `disconnect`
  names eu, and the subscriber resumes there from its cursor.
- ``sub-kill``: SIGKILL on the subscriber's edge: the connection just breaks.
- ``pub-kill``: SIGKILL on the publisher's edge (eu): its unacked publishes go again to
  us, with the same message ids.

Per mode it prints the median and the maximum over the runs of:

- the gap: the longest time between two consecutive messages at the subscriber, around
  the event (at 200 msg/s the gap with nothing happening is 5 ms);
- for ``pub-kill``, the stall: the longest publish-to-ack time in the run;

and the messages lost and received twice over all runs (both must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import Rig, two_regions

from client import Client, ClientSettings, Subscription

MODES = ("sub-term", "sub-kill", "pub-kill")


@dataclass
class Run:
    gap_ms: float
    stall_ms: float
    lost: int
    twice: int


async def one_run(rig: Rig, mode: str, run: int, rate: int) -> Run:
    edges = rig.edges
    ws = {r: edges.edge(r).ws_url for r in ("eu", "us")}
    settings = ClientSettings(reconnect_base_s=0.05, reconnect_max_s=1.0)
    # The subscriber lives in us (falls back to eu); the publisher in eu (falls back to us).
    sub_client = Client(
        edges.token("sub"), regions={"us": [ws["us"]], "eu": [ws["eu"]]}, settings=settings
    )
    pub = Client(
        edges.token("pub"), regions={"eu": [ws["eu"]], "us": [ws["us"]]}, settings=settings
    )
    channel = f"failover:{mode}:{run}"
    async with sub_client, pub:
        sub = await sub_client.subscribe(channel)
        arrivals: list[tuple[float, int]] = []
        n = rate * 4  # 4 s of messages; the event comes after 1 s
        stalls: list[float] = []

        async def receive(s: Subscription) -> None:
            distinct: set[int] = set()
            async for m in s:
                arrivals.append((time.monotonic(), m.data))
                distinct.add(m.data)
                if len(distinct) >= n:
                    return

        async def publish_one(i: int) -> None:
            t0 = time.monotonic()
            await pub.publish(channel, i)
            stalls.append(time.monotonic() - t0)

        receiving = asyncio.create_task(receive(sub))
        start = time.monotonic()
        sends = []
        victim = edges.edge("us" if mode.startswith("sub") else "eu").process
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            if i == rate:
                victim.signal(signal.SIGTERM if mode == "sub-term" else signal.SIGKILL)
            sends.append(asyncio.create_task(publish_one(i)))
        await asyncio.gather(*sends)
        try:
            await asyncio.wait_for(receiving, 30)
        except TimeoutError:
            receiving.cancel()
    await asyncio.to_thread(victim.wait_or_kill, 30)
    victim.start()
    await asyncio.to_thread(edges.wait_ready, 60)
    seen = [d for _, d in arrivals]
    times = [t for t, _ in arrivals]
    gap = max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))
    return Run(gap * 1000, max(stalls) * 1000, n - len(set(seen)), len(seen) - len(set(seen)))


async def main(args: argparse.Namespace) -> None:
    with two_regions() as rig:
        print(
            f"client failover: eu and us, one edge each, {args.rate} msg/s, {args.runs} runs "
            "per mode (the edge restarted after each)"
        )
        print(f"{'mode':>9} {'gap p50 ms':>11} {'gap max ms':>11} {'stall max ms':>13} lost twice")
        for mode in MODES:
            runs = [await one_run(rig, mode, k, args.rate) for k in range(args.runs)]
            gaps = [r.gap_ms for r in runs]
            stall = (
                f"{max(r.stall_ms for r in runs):>13.0f}" if mode == "pub-kill" else f"{'-':>13}"
            )
            print(
                f"{mode:>9} {statistics.median(gaps):>11.0f} {max(gaps):>11.0f} {stall} "
                f"{sum(r.lost for r in runs):>4} {sum(r.twice for r in runs):>5}",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=int, default=200, help="messages per second")
    asyncio.run(main(parser.parse_args()))
