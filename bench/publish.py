"""Publish benchmark: many publishers on one region's edge, pipelined, at fixed rates.

    python bench/publish.py [--connections 20] [--rates 100,1000,4000] [--duration 10]
                            [--size 100] [--channels 10] [--repeat 1] [--no-tls]
                            [--message-ids] [--follow]

Starts a local supercluster (regions eu and us, one nats-server each: us mirrors eu's
stream) and one real edge per region (``edgemesh edge`` processes), opens the publisher
connections to the eu edge as lightweight raw WebSocket clients, and publishes
`size`-byte messages at each aggregate rate, spread evenly over the connections and
the channels. Each connection pipelines: it never waits for an ack before its next
publish. Prints per rate: acks/s, publish-to-ack latency p50/p99/max (client-side,
from the write of the publish to the read of its ack), nacks and missing acks, and
server CPU (user+sys of the edges and nats-servers, over the measured window) per
publish, in all and per process. Every ack names a distinct serial (checked). With
``--repeat N`` a summary gives the median and the spread. Everything it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
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

from tests.rawws import (
    masked_frame,
)

TICK_S = 0.005  # the publishers' schedule: what fell due in a tick goes out in one write


@dataclass
class Tally:
    sent_at: dict[int, int] = field(default_factory=dict)  # publish id -> ns
    latencies_ms: list[float] = field(default_factory=list)
    serials: set[str] = field(default_factory=set)
    nacks: Counter[int] = field(default_factory=Counter)
    answered: int = 0


class Follower(RawClient):
    """Subscribes to one channel and reads what comes (so the edge follows it live)."""

    def __init__(self, host: str, port: int, token: str, channel: str) -> None:
        super().__init__(host, port, token)
        self.channel = channel

    def on_upgraded(self) -> None:
        self.send(json.dumps({"type": "subscribe", "id": 1, "channel": self.channel}).encode())

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        if payload.startswith(b'{"type":"subscribed"') and not self.ready.done():
            self.ready.set_result(None)


class Publisher(RawClient):
    """Write publishes when told and time their acks."""

    def __init__(self, host: str, port: int, token: str, tally: Tally) -> None:
        super().__init__(host, port, token)
        self.tally = tally

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        tally = self.tally
        if payload.startswith(b'{"type":"ack"'):
            reply = json.loads(payload)
            tally.latencies_ms.append((now_ns - tally.sent_at.pop(reply["id"])) / 1e6)
            tally.serials.add(reply["serial"])
            tally.answered += 1
        elif payload.startswith(b'{"type":"nack"'):
            reply = json.loads(payload)
            tally.sent_at.pop(reply["id"], None)
            tally.nacks[reply["error"]["code"]] += 1
            tally.answered += 1
        elif payload.startswith(b'{"type":"connected"') and not self.ready.done():
            self.ready.set_result(None)

    def publish(self, frames: list[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        if self.transport.is_closing():  # cut by the edge (a rate limit): counted missing
            return
        now = time.perf_counter_ns()
        for k, _ in frames:
            self.tally.sent_at[k] = now
        self.transport.write(b"".join(frame for _, frame in frames))


async def run_rate(
    pubs: list[Publisher],
    tally: Tally,
    rate: int,
    duration: float,
    size: int,
    channels: int,
    pids: list[int],
    first_id: int,
    message_ids: bool = False,
) -> dict[str, float]:
    n = int(rate * duration)

    def id_field(k: int) -> str:
        return f',"message_id":"b-{k}"' if message_ids else ""

    pad = "p" * max(0, size - 30)
    tally.latencies_ms.clear()
    tally.serials.clear()
    tally.nacks.clear()
    tally.answered = 0
    # Publish k goes from connection k % len(pubs) to channel k % channels.
    frames = [
        masked_frame(
            (
                f'{{"type":"publish","id":{first_id + k},"channel":"pub-{k % channels}",'
                f'"data":[{k},"{pad}"]{id_field(first_id + k)}}}'
            ).encode()
        )
        for k in range(n)
    ]
    each0 = [cpu_seconds([pid]) for pid in pids]
    start = time.perf_counter()
    sent = 0
    while sent < n:
        due = min(n, int((time.perf_counter() - start) * rate) + 1)
        batches: dict[int, list[tuple[int, bytes]]] = {}
        for k in range(sent, due):
            batches.setdefault(k % len(pubs), []).append((first_id + k, frames[k]))
        for i, batch in batches.items():
            pubs[i].publish(batch)
        sent = due
        await asyncio.sleep(TICK_S)
    deadline = time.perf_counter() + 10
    # Counters are fed by protocol callbacks: poll them (off the measured path).
    while (  # noqa: ASYNC110
        tally.answered < n and time.perf_counter() < deadline and not all(p.closed for p in pubs)
    ):
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    each = [cpu_seconds([pid]) - c0 for pid, c0 in zip(pids, each0, strict=True)]
    acked = len(tally.latencies_ms)
    lat = sorted(tally.latencies_ms)
    return {
        "rate": rate,
        "acks_per_s": acked / max(1e-9, elapsed),
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": lat[-1] if lat else float("nan"),
        "nacks": sum(tally.nacks.values()),
        "missing": n - tally.answered,
        "closed": sum(p.closed for p in pubs),
        "serials_repeated": acked - len(tally.serials),
        "cpu_us_per_publish": sum(each) / max(1, acked) * 1e6,
        **{f"us_{name}": c / max(1, acked) * 1e6 for name, c in zip(PROCS, each, strict=True)},
        "sent": n,
    }


def print_summary(results: dict[int, list[dict[str, float]]]) -> None:
    """Median [min-max] over the trials of each rate."""
    for rate, rs in results.items():
        print(
            f"{rate:>6} pub/s, {len(rs)} trials: CPU us/publish "
            f"{spread(rs, 'cpu_us_per_publish', 1)}, edge eu {spread(rs, 'us_edge_eu', 1)}, "
            f"p99 ms {spread(rs, 'p99_ms', 1)}, "
            f"nacks {int(sum(r['nacks'] for r in rs))}, "
            f"missing {int(sum(r['missing'] for r in rs))}"
        )


async def bench(args: argparse.Namespace) -> None:
    with two_regions(tls=not args.no_tls) as rig:
        edges, pids = rig.edges, rig.pids
        tally = Tally()
        pubs = await open_clients(
            args.connections,
            edges,
            lambda i: "eu",
            lambda i, host, port: Publisher(host, port, edges.token(f"p{i}"), tally),
        )
        followers = []
        if args.follow:
            followers = await open_clients(
                args.channels,
                edges,
                lambda i: "eu",
                lambda i, host, port: Follower(host, port, edges.token(f"f{i}"), f"pub-{i}"),
            )
        print(
            f"publish: {args.connections} connections to the eu edge, {args.channels} "
            f"channels, {args.size}-byte messages, pipelined, {args.duration:.0f} s per rate; "
            f"us mirrors eu; NATS {'in plain text' if args.no_tls else 'over TLS'}"
            f"{'; every publish has a message_id' if args.message_ids else ''}"
            f"{'; one subscriber per channel on the eu edge' if args.follow else ''}"
        )
        print(
            f"{'pub/s':>6} {'acks/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'nacks':>5} {'missing':>7} {'CPU us/pub':>10} {'edge eu':>8}"
        )
        results: dict[int, list[dict[str, float]]] = {rate: [] for rate in args.rates}
        first_id = 0
        for rate in [rate for _ in range(args.repeat) for rate in args.rates]:
            r = await run_rate(
                pubs,
                tally,
                rate,
                args.duration,
                args.size,
                args.channels,
                pids,
                first_id,
                args.message_ids,
            )
            first_id += int(r["sent"])
            results[rate].append(r)
            print(
                f"{rate:>6} {r['acks_per_s']:>8.0f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} "
                f"{r['max_ms']:>7.1f} {int(r['nacks']):>5} {int(r['missing']):>7} "
                f"{r['cpu_us_per_publish']:>10.1f} {r['us_edge_eu']:>8.1f}",
                flush=True,
            )
            print(per_process(r, "publish", 1))
            if r["nacks"]:
                print(f"  nacks by code: {dict(tally.nacks)}")
            if r["closed"]:
                print(
                    f"  {int(r['closed'])} of {len(pubs)} connections closed by the edge "
                    "(over EDGEMESH_PUBLISH_RATE_PER_S for too long?): rerun with more "
                    "--connections"
                )
                break
            if r["serials_repeated"]:
                print(f"  ERROR: {int(r['serials_repeated'])} acks repeat a serial")
        print(f"load average {os.getloadavg()[0]:.1f}")
        if args.repeat > 1:
            print_summary(results)
        close_clients(pubs)
        close_clients(followers)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=20)
    p.add_argument(
        "--rates", type=lambda s: [int(x) for x in s.split(",")], default=[100, 1000, 4000]
    )
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--repeat", type=int, default=1, help="run the rates this many times")
    p.add_argument("--no-tls", action="store_true", help="NATS in plain text (default: TLS)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="one subscriber per channel on the eu edge, so it follows every channel live",
    )
    p.add_argument(
        "--message-ids",
        action="store_true",
        help="give every publish a message_id (connections younger than the dedup window "
        "then look for it in the other region's copy before storing it)",
    )
    args = p.parse_args()
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
