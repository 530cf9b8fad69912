"""Fan-out benchmark: 1 publisher, N subscribers on two regions' edges, fixed publish rates.

    python bench/fanout.py [--subscribers 1000] [--rates 5,20,50] [--duration 10] [--size 100]
                           [--repeat 1] [--no-tls] [--floor]

Starts a local supercluster (regions eu and us, one nats-server each) and one real edge
per region (``edgemesh edge`` processes), connects the subscribers (half to each edge)
as lightweight raw WebSocket clients, publishes `size`-byte messages from one client in
eu at each rate, and prints per rate: deliveries/s, end-to-end latency p50/p99/max,
lost deliveries, and server CPU (user+sys of the edge and nats-server processes, over
the measured window only: from the first publish until the last delivery and ack)
per delivery. With ``--repeat N`` the rates are run N times over the same setup and a
summary gives the median and the spread. With ``--floor`` it then runs
``bench/write_floor.py`` at each rate (the rig stopped) and prints the median CPU per
delivery as a multiple of that floor. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import (
    PROCS,
    RawClient,
    close_clients,
    cpu_seconds,
    open_clients,
    pct,
    per_process,
    spread,
    two_regions,
)

from tests.edge_fixture import EdgeCluster


@dataclass
class Stats:
    latencies_ms: list[float] = field(default_factory=list)
    delivered: int = 0


class Subscriber(RawClient):
    """Subscribe, then count `message` frames and time them."""

    def __init__(self, host: str, port: int, token: str, channel: str, stats: Stats) -> None:
        super().__init__(host, port, token)
        self.channel = channel
        self.stats = stats
        self.seen: set[int] = set()

    def on_upgraded(self) -> None:
        self.send(json.dumps({"type": "subscribe", "id": 1, "channel": self.channel}).encode())

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        if payload.startswith(b'{"type":"message"'):
            at = payload.index(b'"data":[') + 8
            stop = payload.index(b",", at)
            seq_at = stop + 1
            seq_stop = payload.index(b",", seq_at)
            self.stats.latencies_ms.append((now_ns - int(payload[at:stop])) / 1e6)
            self.seen.add(int(payload[seq_at:seq_stop]))
            self.stats.delivered += 1
        elif payload.startswith(b'{"type":"subscribed"') and not self.ready.done():
            self.ready.set_result(None)


def idle_us(result: dict[str, float], idle_per_s: float) -> float:
    """The idle CPU of the measured window, per delivery, in microseconds."""
    return idle_per_s * result["elapsed_s"] / max(1.0, result["delivered"]) * 1e6


async def run_rate(
    edges: EdgeCluster,
    subs: list[Subscriber],
    stats: Stats,
    rate: int,
    duration: float,
    size: int,
    pids: list[int],
) -> dict[str, float]:
    from websockets.asyncio.client import connect

    channel = subs[0].channel
    n = int(rate * duration)
    pad = "p" * max(0, size - 40)
    stats.latencies_ms.clear()
    stats.delivered = 0
    for s in subs:
        s.seen.clear()
    acks = 0
    url = edges.ws_url("eu", edges.token("bench-pub"))
    async with connect(url, compression=None) as pub:
        await pub.recv()

        async def read_acks() -> None:
            nonlocal acks
            async for raw in pub:
                if b'"type":"ack"' in (raw if isinstance(raw, bytes) else raw.encode()):
                    acks += 1

        reader = asyncio.create_task(read_acks())
        each0 = [cpu_seconds([pid]) for pid in pids]
        t0 = time.perf_counter()
        start = time.perf_counter()
        for k in range(n):
            target = start + k / rate
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            # data = [send time ns, seq, padding]: about `size` bytes of JSON
            frame = (
                f'{{"type":"publish","channel":"{channel}","data":'
                f'[{time.perf_counter_ns()},{k},"{pad}"]}}'
            )
            await pub.send(frame)
        expected = n * len(subs)
        deadline = time.perf_counter() + 10
        # Counters are fed by protocol callbacks: poll them (off the measured path).
        while (stats.delivered < expected or acks < n) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - t0
        each = [cpu_seconds([pid]) - c0 for pid, c0 in zip(pids, each0, strict=True)]
        reader.cancel()
    lost = sum(n - len(s.seen) for s in subs)
    lat = sorted(stats.latencies_ms)
    return {
        "rate": rate,
        "deliveries_per_s": stats.delivered / max(1e-9, duration),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
        "lost": lost,
        "acks_missing": n - acks,
        "cpu_us_per_delivery": sum(each) / max(1, stats.delivered) * 1e6,
        "delivered": stats.delivered,
        "edge_us_per_delivery": sum(each[:2]) / max(1, stats.delivered) * 1e6,
        # Per process (edge eu, edge us, nats eu, nats us): µs per delivery.
        **{
            f"us_{name}": c / max(1, stats.delivered) * 1e6
            for name, c in zip(PROCS, each, strict=True)
        },
        "elapsed_s": elapsed,
    }


def print_summary(results: dict[int, list[dict[str, float]]]) -> None:
    """Median [min-max] over the trials of each rate."""
    for rate, rs in results.items():
        cpu = spread(rs, "cpu_us_per_delivery")
        print(
            f"{rate:>6} msg/s, {len(rs)} trials: CPU us/delivery {cpu}, minus idle "
            f"{spread(rs, 'minus_idle')}, edges only {spread(rs, 'edge_us_per_delivery')}, "
            f"p99 ms {spread(rs, 'p99_ms')}, lost {int(sum(r['lost'] for r in rs))}"
        )


async def bench(args: argparse.Namespace) -> dict[int, list[dict[str, float]]]:
    import uvloop  # noqa: F401  (the client side runs on uvloop too, see main)

    with two_regions(tls=not args.no_tls) as rig:
        edges, pids = rig.edges, rig.pids
        stats = Stats()
        subs = await open_clients(
            args.subscribers,
            edges,
            lambda i: "eu" if i % 2 == 0 else "us",
            lambda i, host, port: Subscriber(host, port, edges.token(f"s{i}"), "fanout", stats),
        )
        print(
            f"fan-out: {args.subscribers} subscribers (half on eu, half on us), "
            f"1 publisher in eu, {args.size}-byte messages, {args.duration:.0f} s per rate, "
            f"NATS {'in plain text' if args.no_tls else 'over TLS'}"
        )
        head = (
            f"{'msg/s':>6} {'deliv/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'lost':>5} {'CPU us/deliv':>12} {'minus idle':>10} {'edges only':>10}"
        )
        cpu0 = cpu_seconds(pids)
        await asyncio.sleep(args.duration)
        idle_per_s = (cpu_seconds(pids) - cpu0) / args.duration
        print(
            f"idle server CPU with the subscribers connected: {idle_per_s * 100:.1f}% of a core"
            f"; load average {os.getloadavg()[0]:.1f}"
        )
        print(head)
        results: dict[int, list[dict[str, float]]] = {rate: [] for rate in args.rates}
        for rate in [rate for _ in range(args.repeat) for rate in args.rates]:
            r = await run_rate(edges, subs, stats, rate, args.duration, args.size, pids)
            r["minus_idle"] = r["cpu_us_per_delivery"] - idle_us(r, idle_per_s)
            results[rate].append(r)
            print(
                f"{rate:>6} {r['deliveries_per_s']:>9.0f} {r['p50_ms']:>7.1f} "
                f"{r['p99_ms']:>7.1f} {r['max_ms']:>7.1f} {int(r['lost']):>5} "
                f"{r['cpu_us_per_delivery']:>12.2f} "
                f"{r['minus_idle']:>10.2f} "
                f"{r['edge_us_per_delivery']:>10.2f}",
                flush=True,
            )
            print(per_process(r, "delivery", 2))
            if r["lost"] or r["acks_missing"]:
                print(f"  acks missing: {int(r['acks_missing'])}; edge log tails:")
                for p in edges.edges.values():
                    print(f"  {p.edge.name}: {p.process.log_tail(8)}")
        print(f"load average {os.getloadavg()[0]:.1f}")
        if args.repeat > 1:
            print_summary(results)
        close_clients(subs)
        return results


def write_floor_us(sockets: int, rate: int) -> float:
    """`bench/write_floor.py`'s os.write() figure (in all), in a process of its own."""
    script = Path(__file__).with_name("write_floor.py")
    argv = [sys.executable, str(script), "--sockets", str(sockets), "--rate", str(rate)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("os.write()"))
    return float(line.rsplit("in all:", 1)[1])


def print_floor(args: argparse.Namespace, results: dict[int, list[dict[str, float]]]) -> None:
    """Each rate's CPU per delivery against the write floor measured right after it, at
    the same rate: on a shared virtual machine both move with the hour, the ratio less."""
    for rate, rs in results.items():
        floor = write_floor_us(args.subscribers // 2, rate)
        cpu = statistics.median(r["cpu_us_per_delivery"] for r in rs)
        print(
            f"{rate:>6} msg/s: write floor (os.write, {args.subscribers // 2} sockets, in all) "
            f"{floor:.2f} us; CPU per delivery {cpu:.2f} us = {cpu / floor:.2f} x the floor"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")], default=[5, 20, 50])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--repeat", type=int, default=1, help="run the rates this many times")
    p.add_argument("--no-tls", action="store_true", help="NATS in plain text (default: TLS)")
    p.add_argument(
        "--floor",
        action="store_true",
        help="then measure the write floor (bench/write_floor.py) at each rate and print "
        "the ratio of CPU per delivery to it",
    )
    args = p.parse_args()
    import uvloop

    results = uvloop.run(bench(args))
    if args.floor:
        print_floor(args, results)


if __name__ == "__main__":
    main()
