"""Connecting a component to its region's NATS servers as its own user."""

from __future__ import annotations

from typing import Any

import nats
from nats.aio.client import Client

from mesh.secrets import Secrets
from mesh.topology import Topology


def credentials(secrets: Secrets, user: str) -> tuple[str, str]:
    """(user, password) for one of the account users: "edge", "control" or "sys"."""
    return user, getattr(secrets.nats, user)


async def connect_region(
    topology: Topology,
    secrets: Secrets,
    region: str,
    user: str,
    name: str,
    **options: Any,
) -> Client:
    """A nats-py client connected to `region`'s servers as `user`.

    Reconnects forever by default (edges and control planes outlive NATS restarts);
    pass ``max_reconnect_attempts`` to change that.
    """
    u, p = credentials(secrets, user)
    servers = [s.client_url for s in topology.region(region).nats]
    options.setdefault("max_reconnect_attempts", -1)
    options.setdefault("reconnect_time_wait", 0.25)
    options.setdefault("connect_timeout", 2)
    options.setdefault("allow_reconnect", True)
    return await nats.connect(servers=servers, user=u, password=p, name=name, **options)
