"""Connecting a component to its region's NATS servers as its own user."""

from __future__ import annotations

import logging
from typing import Any

import nats
from nats.aio.client import Client

from mesh.secrets import Secrets
from mesh.tls import client_context
from mesh.topology import Topology


def credentials(secrets: Secrets, user: str) -> tuple[str, str]:
    """(user, password) for one of the account users: "edge", "control" or "sys".
    Raises TopologyError when the secrets file has no password for `user`."""
    return user, secrets.password(user)


class _TlsEofNoise(logging.Filter):
    """Drops asyncio's "returning true from eof_received() has no effect when using ssl".

    nats-py starts TLS on a stream protocol made for plain TCP, so each time a NATS
    server closes a TLS connection (a restart, a lame-duck) the event loop logs that
    warning; it says nothing about the deployment and would bury the lines that do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("returning true from eof_received()")


_TLS_EOF_NOISE = _TlsEofNoise()


def tls_options(topology: Topology) -> dict[str, Any]:
    """nats-py's options for the deployment's TLS: the handshake comes first (the
    servers demand it), and the server must show a certificate of the deployment's CA
    for the host dialled. Empty without TLS."""
    ctx = client_context(topology.tls)
    if ctx is None:
        return {}
    logging.getLogger("asyncio").addFilter(_TLS_EOF_NOISE)  # once: filters are a set
    return {"tls": ctx, "tls_handshake_first": True}


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
    options = {**tls_options(topology), **options}
    return await nats.connect(servers=servers, user=u, password=p, name=name, **options)
