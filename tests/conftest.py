"""Shared fixtures: a real local NATS supercluster, started once per test module.

Every process a fixture starts is stopped by its pid when the module ends, even
when a test fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client

from mesh.natsconn import connect_region
from mesh.pki import issue_local_pki
from mesh.process import FreePorts
from mesh.secrets import Secrets, generate_secrets
from mesh.supercluster import Supercluster
from mesh.topology import DEV_REGIONS, Topology, local_topology


def start_supercluster(
    tmp: Path,
    servers_per_region: int = 1,
    edges_per_region: int = 1,
    regions: tuple[tuple[str, float, float], ...] = DEV_REGIONS,
    tls: bool = True,
) -> Supercluster:
    """A supercluster on this machine; with `tls` (as `edgemesh dev` runs it) every NATS
    listener speaks TLS only, with a CA made for it (mesh/tls.py)."""
    topology = local_topology(FreePorts(), servers_per_region, edges_per_region, regions)
    if tls:
        topology = issue_local_pki(topology, tmp / "tls")
    sc = Supercluster(topology, generate_secrets(), tmp)
    sc.start(timeout=60)
    return sc


@pytest.fixture(scope="module")
def supercluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supercluster]:
    """Three regions (eu, us, ap), one nats-server each, gateways up, JetStream ready."""
    sc = start_supercluster(tmp_path_factory.mktemp("sc"))
    try:
        yield sc
    finally:
        sc.stop()


@pytest.fixture(scope="module")
def topology(supercluster: Supercluster) -> Topology:
    return supercluster.topology


@pytest.fixture(scope="module")
def secrets(supercluster: Supercluster) -> Secrets:
    return supercluster.secrets


class NatsClients:
    """Opens nats-py clients on a supercluster and closes them all at the end."""

    def __init__(self, sc: Supercluster) -> None:
        self.sc = sc
        self.opened: list[Client] = []

    async def __call__(self, region: str, user: str = "edge", **options: object) -> Client:
        options.setdefault("max_reconnect_attempts", 5)
        nc = await connect_region(
            self.sc.topology, self.sc.secrets, region, user, f"test-{region}", **options
        )
        self.opened.append(nc)
        return nc

    async def close(self) -> None:
        for nc in self.opened:
            if not nc.is_closed:
                await nc.close()


@pytest.fixture
async def nats_client(supercluster: Supercluster) -> AsyncIterator[NatsClients]:
    clients = NatsClients(supercluster)
    try:
        yield clients
    finally:
        await clients.close()
