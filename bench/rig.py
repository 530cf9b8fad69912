"""What the fan-out and publish benchmarks share: the two-region rig they measure, a
bare WebSocket client, and how they read CPU time and spread.

:func:`two_regions` starts a local supercluster of regions eu and us (one nats-server
each, TLS on every NATS listener as in a deployment unless told otherwise) and one real
edge per region (``edgemesh edge`` processes at their default log level), and stops all
of it at the end. Its pids come in the order of :data:`PROCS`.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mesh.pki import issue_local_pki
from mesh.process import FreePorts
from mesh.secrets import generate_secrets
from mesh.supercluster import Supercluster
from mesh.topology import DEV_REGIONS, local_topology
from tests.edge_fixture import EdgeCluster
from tests.rawws import PING, PONG, masked_frame, take_frames, upgrade_request, upgrade_response

CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = ("edge_eu", "edge_us", "nats_eu", "nats_us")  # the order of the measured pids


@dataclass(frozen=True)
class Rig:
    supercluster: Supercluster
    edges: EdgeCluster
    pids: list[int]  # the server processes, in the order of PROCS


@contextmanager
def two_regions(tls: bool = True) -> Iterator[Rig]:
    regions = tuple(r for r in DEV_REGIONS if r[0] in ("eu", "us"))
    with tempfile.TemporaryDirectory(prefix="edgemesh-bench-") as tmp:
        topology = local_topology(FreePorts(), 1, 1, regions)
        if tls:  # NATS speaks TLS, as a deployment's does (mesh/tls.py)
            topology = issue_local_pki(topology, Path(tmp) / "tls")
        sc = Supercluster(topology, generate_secrets("bench"), Path(tmp))
        sc.start(60)
        # The edges' default log level (the tests' fixture runs them at info).
        edges = EdgeCluster(sc, Path(tmp) / "edges", log_level="warning")
        try:
            edges.start()
            # The server processes: the edges first, then the nats-servers.
            procs = [edges.edge(region).process for region in ("eu", "us")]
            procs += [sc.servers[f"{region}-n1"].process for region in ("eu", "us")]
            pids = [pid for pid in (p.pid for p in procs) if pid is not None]
            assert len(pids) == len(procs) == len(PROCS)
            yield Rig(sc, edges, pids)
        finally:
            edges.stop()
            sc.stop()


class RawClient(asyncio.Protocol):
    """A WebSocket client without a library, cheap on the client's side: the upgrade,
    pongs to the edge's keepalive pings, and each other frame handed to
    :meth:`on_frame` with the time its read arrived. A subclass resolves ``ready``."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.request = upgrade_request(host, port, token)
        self.buf = bytearray()
        self.upgraded = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        assert self.transport is not None
        if not self.upgraded:
            head = upgrade_response(self.buf)
            if head is None:
                return
            if b" 101 " not in head:
                self.ready.set_exception(RuntimeError(f"handshake refused: {head!r}"))
                self.transport.close()
                return
            self.upgraded = True
            self.on_upgraded()
        now = time.perf_counter_ns()
        for opcode, payload in take_frames(self.buf):
            if opcode == PING:  # the edge's keepalive ping: answer, or be cut off
                self.transport.write(masked_frame(payload, 0x80 | PONG))
            else:
                self.on_frame(payload, now)

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(masked_frame(payload))

    def on_upgraded(self) -> None:
        """The 101 is in: the connection is a WebSocket."""

    def on_frame(self, payload: bytes, now_ns: int) -> None:
        raise NotImplementedError


Client = TypeVar("Client", bound=RawClient)


async def open_clients(
    n: int,
    edges: EdgeCluster,
    region_of: Callable[[int], str],
    make: Callable[[int, str, int], Client],
    at_once: bool = False,
    timeout_s: float = 120.0,
) -> list[Client]:
    """`n` clients, client i on the edge of ``region_of(i)`` (``make(i, host, port)``),
    once every one of them is ready. One connection after the other, or with
    `at_once` all of them concurrently (a connection storm)."""
    loop = asyncio.get_running_loop()

    async def connect(i: int) -> Client:
        edge = edges.edge(region_of(i)).edge
        _, client = await loop.create_connection(
            lambda: make(i, edge.host, edge.port), edge.host, edge.port
        )
        return client

    if at_once:
        clients = await asyncio.wait_for(asyncio.gather(*map(connect, range(n))), timeout_s)
    else:
        clients = [await connect(i) for i in range(n)]
    await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), timeout_s)
    return list(clients)


def close_clients(clients: list[Client]) -> None:
    for c in clients:
        if c.transport is not None:
            c.transport.close()


def per_process(result: dict[str, float], unit: str, digits: int) -> str:
    """The line splitting a result's CPU by process (keys ``us_<proc>``)."""
    return f"        per process, us/{unit}: " + ", ".join(
        f"{n.replace('_', ' ')} {result['us_' + n]:.{digits}f}" for n in PROCS
    )


def cpu_seconds(pids: list[int]) -> float:
    """user+sys of the processes so far (all their threads), from /proc."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def pct(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p / 100 * len(sorted_values)))]


def spread(results: list[dict[str, float]], key: str, digits: int = 2) -> str:
    """Median [min-max] of `key` over trials."""
    values = sorted(r[key] for r in results)
    return (
        f"{statistics.median(values):.{digits}f} [{values[0]:.{digits}f}-{values[-1]:.{digits}f}]"
    )
