"""TLS on every NATS listener, on a real supercluster (the shared fixture speaks TLS).

What an attacker on the network between regions, or next to a client port, meets:
every connection is TLS (gateways and routes mutual), a plain-text client gets no byte
of the protocol and never gets to send its password, and a server whose certificate
is not from the deployment's CA cannot join, even knowing the gateway password.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from mesh.nats_config import render_nats_config
from mesh.pki import issue_local_pki
from mesh.process import FreePorts, ManagedProcess, wait_until
from mesh.supercluster import Supercluster
from mesh.topology import parse_topology
from tests.conftest import NatsClients


async def test_every_connection_is_tls(
    supercluster: Supercluster, nats_client: NatsClients
) -> None:
    nc = await nats_client("eu")
    await nc.flush()
    name = "eu-n1"
    gw = supercluster.monitor(name, "/gatewayz")
    assert set(gw["outbound_gateways"]) == {"us", "ap"}
    for side in ("outbound_gateways", "inbound_gateways"):
        for info in gw[side].values():
            for conn in info if isinstance(info, list) else [info]:
                assert conn["connection"]["tls_version"] == "1.3", (side, conn)
    clients = supercluster.monitor(name, "/connz")["connections"]
    assert clients and all(c.get("tls_version") == "1.3" for c in clients)


def test_monitoring_is_https_only(supercluster: Supercluster) -> None:
    s = supercluster.topology.region("us").nats[0]
    assert supercluster.monitor("us-n1", "/healthz")["status"] == "ok"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{s.host}:{s.monitor_port}/healthz", timeout=5).raise_for_status()
    # Not with the system's CAs alone: the server's certificate is the deployment's.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(supercluster.topology.monitor_url(s) + "/healthz", timeout=5)


def _read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    got = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        chunk = sock.recv(4096)
        if not chunk:
            return got
        got += chunk
    raise AssertionError(f"still open after {timeout_s} s; received {got!r}")


async def test_a_plain_text_client_gets_nothing_and_is_closed(
    supercluster: Supercluster, nats_client: NatsClients
) -> None:
    s = supercluster.topology.region("eu").nats[0]
    password = supercluster.secrets.password("edge")
    with socket.create_connection((s.host, s.client_port), timeout=5) as sock:
        # A client that does not start with TLS: the server never speaks the protocol
        # in clear (no INFO), so such a client never gets to the point of sending its
        # password; what it writes anyway ends the connection.
        connect = json.dumps({"user": "edge", "pass": password, "verbose": False})
        sock.sendall(f"CONNECT {connect}\r\nPING\r\n".encode())
        got = await asyncio.to_thread(_read_until_closed, sock, 15)
    assert b"INFO" not in got and b"PONG" not in got and b"+OK" not in got
    # Everyone else is unharmed.
    nc = await nats_client("eu")
    assert (await nc.request("$JS.API.INFO", b"", timeout=5)).data


def test_a_server_with_a_foreign_certificate_cannot_join_as_a_gateway(
    supercluster: Supercluster, tmp_path: Path
) -> None:
    """An impostor for region us: it knows the gateway password and trusts the real
    servers, but its own certificate is from another CA. eu refuses it."""
    real = supercluster.topology
    assert real.tls is not None
    rogue = issue_local_pki(real, tmp_path / "rogue-tls")
    assert rogue.tls is not None
    # It trusts both CAs, so the refusal can only come from eu checking its certificate.
    both = tmp_path / "both-ca.pem"
    both.write_bytes(Path(real.tls.ca_file).read_bytes() + Path(rogue.tls.ca_file).read_bytes())
    doc = rogue.model_dump(mode="json")
    doc["tls"]["ca_file"] = str(both)
    ports = FreePorts()
    us = next(r for r in doc["regions"] if r["name"] == "us")
    us["nats"] = [
        {
            "name": "us-impostor",
            "host": "127.0.0.1",
            "client_port": ports(),
            "cluster_port": ports(),
            "gateway_port": ports(),
            "monitor_port": ports(),
        }
    ]
    us["edges"], us["control_plane"] = [], None
    topology = parse_topology(doc)
    conf = tmp_path / "impostor.conf"
    conf.write_text(
        render_nats_config(topology, supercluster.secrets, "us", 1, str(tmp_path / "js"))
    )
    impostor = ManagedProcess(
        "nats-server us-impostor", [supercluster.binary, "-c", str(conf)], tmp_path / "imp.log"
    )
    eu = supercluster.servers["eu-n1"]
    eu_log = eu.process.log_path
    seen = eu_log.read_text(errors="replace")
    impostor.start()
    try:

        def refused() -> bool:
            new = eu_log.read_text(errors="replace")[len(seen) :]
            return "TLS gateway handshake error" in new and "unknown authority" in new

        assert wait_until(refused, 30, 0.1), eu_log.read_text(errors="replace")[len(seen) :]
        assert impostor.running(), impostor.log_tail()
        inbound = supercluster.monitor("eu-n1", "/gatewayz")["inbound_gateways"]
        names = {c["connection"]["name"] for c in inbound["us"]}
        assert names == {supercluster.monitor("us-n1", "/varz")["server_id"]}
    finally:
        impostor.stop()
    assert not impostor.running()
