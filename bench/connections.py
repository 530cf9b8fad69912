"""Connections benchmark: what client connections cost an edge, to admit and to hold.

    python bench/connections.py [--connections 2000] [--idle-s 30]

Starts the same rig as the other benchmarks (regions eu and us, one nats-server and
one real edge each), then, on the eu edge:

1. **A connection storm**: `connections` raw WebSocket clients connect at once, as
   after a failover (this process opens them all concurrently). It prints the time
   until every one has its ``connected`` frame, and the edge's CPU (user+sys) per
   connection: the HTTP upgrade, the token check, the session, ``connected``.
2. **Idle CPU**: the edge's CPU over `idle-s` seconds before the storm, and again with
   the clients connected and idle, from one heartbeat interval after the storm (the
   edge's keepalive pings under way, each answered by its client): ms of CPU a second
   per 1,000 idle connections, and per ping.
3. **Memory**: it reads the edge process's resident memory (``VmRSS``) before the
   storm, after it (the clients idle), after each client subscribed to one channel
   they all share, and after each subscribed to a channel of its own as well (a NATS
   subscription, a ledger and a hub entry per channel), and prints KiB per
   connection for each step (the growth over the step divided by `connections`).
   RSS counts what the process holds, including memory Python freed but kept: read
   the figures as what an edge must have, not as exact object sizes.

The clients share this machine's cores with the edge, so the storm's time is an upper
bound. Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rig import RawClient, close_clients, cpu_seconds, open_clients, two_regions

SETTLE_S = 1.0  # after a step, for the edge to finish what the last replies started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Member(RawClient):
    """Connected once its ``connected`` frame is in; subscribes on request."""

    def __init__(self, host: str, port: int, token: str) -> None:
        super().__init__(host, port, token)
        self.waiting: dict[int, asyncio.Future[None]] = {}
        self.next_id = 0
        self.heartbeat_s = 0.0

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "connected" and not self.ready.done():
            self.heartbeat_s = float(frame["heartbeat_interval_s"])
            self.ready.set_result(None)
        elif kind in ("subscribed", "error"):
            fut = self.waiting.pop(frame.get("id"), None)
            if fut is not None and not fut.done():
                if kind == "error":
                    fut.set_exception(RuntimeError(f"subscribe refused: {frame}"))
                else:
                    fut.set_result(None)

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        self.next_id += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = fut
        frame = {"type": "subscribe", "id": self.next_id, "channel": channel}
        self.send(json.dumps(frame).encode())
        return fut


async def cpu_rate(pid: int, seconds: float) -> float:
    """The process's CPU seconds per second over the next `seconds` (0: none measured)."""
    if seconds <= 0:
        return 0.0
    cpu0 = cpu_seconds([pid])
    await asyncio.sleep(seconds)
    return (cpu_seconds([pid]) - cpu0) / seconds


async def subscribe_all(clients: list[Member], channel_of: list[str]) -> None:
    batch = 200  # subscribes in flight at once
    for at in range(0, len(clients), batch):
        futures = [c.subscribe(channel_of[at + i]) for i, c in enumerate(clients[at : at + batch])]
        await asyncio.wait_for(asyncio.gather(*futures), 120)


async def bench(args: argparse.Namespace) -> None:
    n = args.connections
    with two_regions() as rig:
        pid = rig.pids[0]  # the eu edge
        edges = rig.edges
        await asyncio.sleep(SETTLE_S)
        tokens = [edges.token(f"m{i}") for i in range(n)]
        steps = [("edge with no clients", rss_kib(pid))]
        idle_base = await cpu_rate(pid, args.idle_s)
        cpu0 = cpu_seconds([pid])
        started = time.perf_counter()
        clients = await open_clients(
            n,
            edges,
            lambda i: "eu",
            lambda i, host, port: Member(host, port, tokens[i]),
            at_once=True,
            timeout_s=300,
        )
        storm_s = time.perf_counter() - started
        storm_cpu_us = (cpu_seconds([pid]) - cpu0) / n * 1e6
        try:
            await asyncio.sleep(SETTLE_S)
            steps.append(("connected, idle", rss_kib(pid)))
            heartbeat_s = clients[0].heartbeat_s
            if args.idle_s > 0:
                await asyncio.sleep(heartbeat_s)  # every connection's pings under way
            idle_conns = await cpu_rate(pid, args.idle_s)
            await subscribe_all(clients, ["shared"] * n)
            await asyncio.sleep(SETTLE_S)
            steps.append(("+ a subscription to a shared channel", rss_kib(pid)))
            await subscribe_all(clients, [f"own-{i}" for i in range(n)])
            await asyncio.sleep(SETTLE_S)
            steps.append(("+ a subscription to a channel of its own", rss_kib(pid)))
        finally:
            close_clients(clients)
        print(f"connections: {n} WebSocket clients to one edge (eu)")
        print(
            f"  storm: all {n} connected in {storm_s:.2f} s ({n / storm_s:.0f}/s); "
            f"edge CPU {storm_cpu_us:.0f} us per connection"
        )
        if args.idle_s > 0:
            per_1000 = (idle_conns - idle_base) / n * 1000
            per_ping_us = (idle_conns - idle_base) / (n / heartbeat_s) * 1e6
            print(
                f"  idle CPU: edge with no clients {idle_base * 1000:.2f} ms/s; with the "
                f"{n} connected {idle_conns * 1000:.2f} ms/s (a ping every {heartbeat_s:g} s "
                f"each): {per_1000 * 1000:.2f} ms/s per 1,000 connections, "
                f"{per_ping_us:.0f} us per ping"
            )
        print("  memory, RSS of the edge process:")
        print(f"  {steps[0][0]:<42} {steps[0][1] / 1024:8.1f} MiB")
        for (_, before), (name, after) in itertools.pairwise(steps):
            print(f"  {name:<42} {(after - before) / n:8.1f} KiB per connection")
        total = (steps[-1][1] - steps[0][1]) / n
        print(f"  {'in all':<42} {total:8.1f} KiB per connection")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--idle-s", type=float, default=30.0, help="idle CPU window (0: skip)")
    args = p.parse_args()
    import uvloop

    uvloop.run(bench(args))


if __name__ == "__main__":
    main()
