"""Render one nats-server's configuration from the topology. Pure: no file or process I/O.

Every server requires auth: components connect as their own users in the ``EM``
account (JetStream enabled), monitoring tools as ``sys`` in the system account,
and routes and gateways authenticate with their own credentials.

With ``tls`` in the topology every listener speaks TLS only (see mesh/tls.py): clients
start with the TLS handshake (``handshake_first``: no password is ever sent before
it), monitoring is https, and routes and gateways use mutual TLS: a server accepts
another only if its certificate comes from the deployment's CA.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mesh.secrets import PASSWORDS, Secrets
from mesh.topology import NatsServer, Region, Tls, Topology, TopologyError

ACCOUNT = "EM"
SYSTEM_ACCOUNT = "SYS"

# Edges must not speak for the control plane: no region states, observations or drain
# records (KV) from an edge's credentials, even if an edge host is compromised.
EDGE_DENIED_PUBLISH = ("em.ctl.>", "$KV.>")
EDGE_PERMISSIONS = (
    "{ publish: { deny: [" + ", ".join(json.dumps(s) for s in EDGE_DENIED_PUBLISH) + "] } }"
)


@dataclass(frozen=True)
class JetStreamLimits:
    max_memory_store: str = "256MB"
    max_file_store: str = "8GB"


def _q(s: str) -> str:
    """A NATS config string literal (NATS accepts JSON-style double-quoted strings)."""
    return json.dumps(s)


def _url(user: str, password: str, host: str, port: int) -> str:
    return f"nats://{user}:{password}@{host}:{port}"


# Seconds a TLS handshake may take (NATS' default of 2 s is tight across regions).
TLS_TIMEOUT_S = 5


def tls_block(tls: Tls, indent: str, *, mutual: bool, handshake_first: bool = False) -> str:
    """A ``tls { ... }`` block: the server's certificate, and with `mutual` the demand
    that the other side show one from the CA too. Pure."""
    lines = [
        f"cert_file: {_q(tls.cert_file)}",
        f"key_file: {_q(tls.key_file)}",
        f"ca_file: {_q(tls.ca_file)}",
        f"timeout: {TLS_TIMEOUT_S}",
    ]
    if mutual:
        lines.append("verify: true")
    if handshake_first:
        lines.append("handshake_first: true")
    body = "".join(f"{indent}  {line}\n" for line in lines)
    return f"{indent}tls {{\n{body}{indent}}}\n"


def find_server(topology: Topology, region: str, server: int) -> tuple[Region, NatsServer]:
    """The region and its `server`-th (1-based) NATS server. Raises TopologyError."""
    r = topology.region(region)
    if not 1 <= server <= len(r.nats):
        raise TopologyError(f"server: region {region!r} has servers 1..{len(r.nats)}, not {server}")
    return r, r.nats[server - 1]


def render_nats_config(
    topology: Topology,
    secrets: Secrets,
    region: str,
    server: int,
    store_dir: str,
    limits: JetStreamLimits = JetStreamLimits(),
) -> str:
    """The nats-server config text for server number `server` (1-based) of `region`."""
    r, s = find_server(topology, region, server)
    # Every password (a nats-server's file, not an edge's): a missing one raises here.
    c = {user: secrets.password(user) for user in PASSWORDS}
    # JetStream needs a cluster block with routes even for a one-server cluster:
    # a route to itself is fine.
    routes = ", ".join(
        _q(_url("route", c["route"], peer.public_host, peer.cluster_port)) for peer in r.nats
    )
    gateways = []
    for other in topology.regions:
        if other.name == r.name:
            continue
        urls = ", ".join(
            _q(_url("gateway", c["gateway"], p.public_host, p.gateway_port)) for p in other.nats
        )
        gateways.append(f"    {{ name: {_q(other.name)}, urls: [{urls}] }}")
    adv = ""
    if s.advertise_host:
        adv = f"client_advertise: {_q(f'{s.advertise_host}:{s.client_port}')}\n"
    cluster_adv = (
        f"  advertise: {_q(f'{s.advertise_host}:{s.cluster_port}')}\n" if s.advertise_host else ""
    )
    gateway_adv = (
        f"  advertise: {_q(f'{s.advertise_host}:{s.gateway_port}')}\n" if s.advertise_host else ""
    )
    gateway_lines = "\n".join(gateways)
    tls = topology.tls
    client_tls = tls_block(tls, "", mutual=False, handshake_first=True) if tls else ""
    cluster_tls = tls_block(tls, "  ", mutual=True) if tls else ""
    monitor = "https" if tls else "http"
    return f"""# Rendered by `edgemesh nats-config` for {r.name}/{s.name}. Do not edit by hand.
server_name: {_q(s.name)}
listen: {_q(f"{s.host}:{s.client_port}")}
{adv}{client_tls}{monitor}: {_q(f"{s.host}:{s.monitor_port}")}
max_payload: 1MB

jetstream {{
  store_dir: {_q(store_dir)}
  max_memory_store: {limits.max_memory_store}
  max_file_store: {limits.max_file_store}
}}

accounts {{
  {ACCOUNT} {{
    jetstream: enabled
    users: [
      {{ user: "edge", password: {_q(c["edge"])}, permissions: {EDGE_PERMISSIONS} }}
      {{ user: "control", password: {_q(c["control"])} }}
    ]
  }}
  {SYSTEM_ACCOUNT} {{
    users: [ {{ user: "sys", password: {_q(c["sys"])} }} ]
  }}
}}
system_account: {SYSTEM_ACCOUNT}

cluster {{
  name: {_q(r.name)}
  listen: {_q(f"{s.host}:{s.cluster_port}")}
{cluster_adv}{cluster_tls}  authorization {{ user: "route", password: {_q(c["route"])} }}
  routes: [{routes}]
}}

gateway {{
  name: {_q(r.name)}
  listen: {_q(f"{s.host}:{s.gateway_port}")}
{gateway_adv}{cluster_tls}  reject_unknown_cluster: true
  authorization {{ user: "gateway", password: {_q(c["gateway"])} }}
  gateways: [
{gateway_lines}
  ]
}}
"""
