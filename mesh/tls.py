"""TLS between the NATS servers and for everything that connects to them.

With ``tls`` in the topology, every NATS listener speaks TLS only: routes and gateways
with mutual TLS (both sides show a certificate of the deployment's CA), clients and
the monitoring port (https) with the server's certificate. Cross-region traffic (the
gateways, control planes probing other regions) then never travels in clear text.

:func:`client_context` is what every client of NATS (nats-py, httpx for monitoring)
verifies servers with. The certificates come from Terraform in a cloud deployment and
from :mod:`mesh.pki` on one machine; only their paths are in the topology.
"""

from __future__ import annotations

import ssl

from mesh.topology import Tls


def client_context(tls: Tls | None) -> ssl.SSLContext | None:
    """How a client verifies the NATS servers: the system's CAs and the deployment's.

    None without TLS. Hostnames are checked (a certificate names its server's hosts)."""
    if tls is None:
        return None
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile=tls.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
