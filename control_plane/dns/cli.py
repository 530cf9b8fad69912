"""``edgemesh dns``: the geo-DNS server on its own, every region considered healthy.

Inside a control-plane instance the same :class:`GeoDnsServer` runs with the
instance's live region states instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from control_plane.dns.geoip import GeoIpError, GeoIpLocator
from control_plane.dns.policy import Location, Locator
from control_plane.dns.server import GeoDnsServer
from control_plane.dns.settings import DnsSettings, DnsSettingsError
from mesh.control import RegionState
from mesh.secrets import load_secrets
from mesh.topology import Topology, TopologyError, load_topology


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dns`` to the ``edgemesh`` command."""
    p = subparsers.add_parser(
        "dns",
        help="serve the geo-DNS zone on its own (all regions healthy)",
        description="Authoritative geo-DNS for the topology's zone, UDP and TCP.",
    )
    p.add_argument("--topology", required=True, type=Path, help="topology file (.json or .toml)")
    p.add_argument("--secrets", type=Path, help="secrets JSON (checked; not needed standalone)")
    p.add_argument("--region", required=True, help="the region this server runs in")
    p.add_argument("--geoip-db", type=Path, help="MaxMind City database (.mmdb)")
    p.add_argument("--host", help="listen address (default: the region's control_plane.dns_host)")
    p.add_argument("--port", type=int, help="listen port (default: control_plane.dns_port)")
    d = DnsSettings()
    p.add_argument(
        "--max-udp-payload",
        type=int,
        default=d.max_udp_payload,
        help="largest UDP response with EDNS, 512-4096 octets (default: %(default)s)",
    )
    p.add_argument(
        "--tcp-idle-timeout",
        type=float,
        default=d.tcp_idle_timeout_s,
        help="seconds before an idle TCP connection is closed (default: %(default)s)",
    )
    p.add_argument(
        "--max-tcp-connections",
        type=int,
        default=d.max_tcp_connections,
        help="open TCP connections at most (default: %(default)s)",
    )
    p.set_defaults(func=run_dns)


def _no_location(address: str) -> Location | None:
    return None


def _all_healthy(topology: Topology) -> Mapping[str, RegionState]:
    return {name: RegionState.HEALTHY for name in topology.names}


def run_dns(args: argparse.Namespace) -> int:
    """Run until SIGTERM or SIGINT. Exit code 2 on bad configuration."""
    topology = load_topology(args.topology)
    if args.secrets:
        load_secrets(args.secrets)
    region = topology.region(args.region)
    cp = region.control_plane
    host = args.host or (cp.dns_host if cp else None)
    port = args.port if args.port is not None else (cp.dns_port if cp else None)
    if host is None or port is None:
        raise TopologyError(f"region {region.name!r} has no control_plane: give --host and --port")
    try:
        settings = DnsSettings(
            max_udp_payload=args.max_udp_payload,
            tcp_idle_timeout_s=args.tcp_idle_timeout,
            max_tcp_connections=args.max_tcp_connections,
        )
        locator: Locator = GeoIpLocator(args.geoip_db) if args.geoip_db else _no_location
    except (DnsSettingsError, GeoIpError) as exc:
        print(f"edgemesh dns: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    states = _all_healthy(topology)
    server = GeoDnsServer(topology, locator, lambda: states, settings)
    try:
        return asyncio.run(_serve(server, host, port))
    finally:
        if isinstance(locator, GeoIpLocator):
            locator.close()


async def _serve(server: GeoDnsServer, host: str, port: int) -> int:
    try:
        await server.start(host, port)
    except OSError as exc:
        reason = exc.strerror or exc
        print(f"edgemesh dns: cannot listen on {host}:{port}: {reason}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"edgemesh dns: serving {server.topology.dns.zone} on {host}:{server.port}", flush=True)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await server.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m control_plane.dns ...``: the same as ``edgemesh dns ...``."""
    parser = argparse.ArgumentParser(prog="edgemesh")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["dns", *(sys.argv[1:] if argv is None else argv)])
    try:
        code: int = args.func(args)
    except TopologyError as exc:
        for line in str(exc).splitlines():
            print(f"edgemesh dns: {line}", file=sys.stderr)
        return 2
    return code
