"""Running one instance: the control plane, its API under uvicorn, and its geo-DNS server,
in one event loop, until SIGINT/SIGTERM (uvicorn handles the signals)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from control_plane.api import create_app
from control_plane.instance import ControlPlaneInstance
from control_plane.route import Locator
from control_plane.settings import ControlPlaneSettings
from control_plane.tokens import ApiKey
from mesh.secrets import Secrets
from mesh.topology import Topology, TopologyError

log = logging.getLogger("edgemesh.control_plane")


@dataclass(frozen=True)
class InstanceConfig:
    topology: Topology
    secrets: Secrets
    region: str
    settings: ControlPlaneSettings
    api_keys: tuple[ApiKey, ...]
    geoip_db: Path | None = None
    dns: bool = True


def _locator(path: Path | None) -> Locator | None:
    if path is None:
        return None
    from control_plane.dns.geoip import GeoIpLocator

    return GeoIpLocator(path)


async def run_instance(config: InstanceConfig) -> int:
    """Serve until asked to stop. Returns the process exit code (2: bad configuration)."""
    region = config.topology.region(config.region)
    if region.control_plane is None:
        raise TopologyError(f"region {region.name!r} has no control_plane in the topology")
    cpc = region.control_plane
    try:
        locator = _locator(config.geoip_db)
    except RuntimeError as exc:  # GeoIpError: missing or not a City database
        print(f"edgemesh control-plane: {exc}", file=sys.stderr)
        return 2
    cp = ControlPlaneInstance(
        config.topology,
        config.secrets,
        config.region,
        config.settings,
        config.api_keys,
        locator,
    )
    dns = None
    if config.dns:
        from control_plane.dns.server import GeoDnsServer

        dns = GeoDnsServer(config.topology, locator or (lambda _ip: None), cp.states)
        try:
            await dns.start(cpc.dns_host, cpc.dns_port)
        except OSError as exc:
            print(
                f"edgemesh control-plane: cannot serve DNS on {cpc.dns_host}:{cpc.dns_port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cp),
            host=cpc.bind_host or cpc.host,
            port=cpc.port,
            log_level="info",
            access_log=False,
            lifespan="off",
        )
    )
    await cp.start()
    log.info("instance %s started; serving the API on %s", cp.region, cpc.url)
    try:
        await server.serve()
    finally:
        await cp.stop()
        if dns is not None:
            await dns.stop()
        close = getattr(locator, "close", None)
        if close is not None:
            close()
    return 0 if server.started else 2
