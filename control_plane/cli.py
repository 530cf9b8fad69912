"""`edgemesh control-plane` (one instance per region) and `edgemesh status`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import os
import sys
from pathlib import Path

from control_plane.errors import ControlPlaneError
from control_plane.settings import FIELDS, ControlPlaneSettings, build_settings, env_name
from control_plane.status import NoInstanceAnswered, fetch_regions, format_table, instance_urls
from control_plane.tokens import ApiKey
from mesh.secrets import api_keys_from_env, load_secrets
from mesh.topology import TopologyError, load_topology


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "control-plane",
        help="run this region's control-plane instance (probes, failover, API, geo-DNS)",
    )
    p.add_argument("--topology", required=True, type=Path, help="topology file (.json or .toml)")
    p.add_argument("--secrets", required=True, type=Path, help="secrets JSON")
    p.add_argument("--region", required=True, help="the region this instance runs in")
    p.add_argument(
        "--geoip-db",
        type=Path,
        default=os.environ.get("EDGEMESH_GEOIP_DB") or None,
        help="MaxMind City database for route and DNS (default: $EDGEMESH_GEOIP_DB)",
    )
    p.add_argument("--no-dns", action="store_true", help="do not serve geo-DNS in this instance")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    settings = p.add_argument_group(
        "settings", "each can also be set with EDGEMESH_CP_<NAME> in the environment"
    )
    defaults = ControlPlaneSettings()
    for name, (section, field) in FIELDS.items():
        holder = getattr(defaults, section) if section else defaults
        settings.add_argument(
            f"--{name}",
            dest=f"setting_{field}_{section}",
            metavar="N",
            help=f"default {getattr(holder, field)} ({env_name(name)})",
        )
    p.set_defaults(func=_cmd_control_plane)

    p = sub.add_parser("status", help="print the regions table from a control-plane instance")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--url", action="append", help="an instance's URL (repeat to try several)")
    g.add_argument("--topology", type=Path, help="try every instance of this topology")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=_cmd_status)

    if importlib.util.find_spec("control_plane.dns.cli") is not None:
        from control_plane.dns import cli as dns_cli

        dns_cli.register(sub)


def _overrides(args: argparse.Namespace) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, (section, field) in FIELDS.items():
        out[name] = getattr(args, f"setting_{field}_{section}")
    return out


def _cmd_control_plane(args: argparse.Namespace) -> int:
    from control_plane.server import InstanceConfig, run_instance

    topology = load_topology(args.topology)
    secrets = load_secrets(args.secrets)
    secrets.require("control")
    topology.region(args.region)
    try:
        settings = build_settings(_overrides(args))
        keys = tuple(ApiKey.parse(k) for k in (*secrets.api_keys, *api_keys_from_env()))
    except ControlPlaneError as exc:
        print(f"edgemesh control-plane: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # One line per probe request would drown everything else.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = InstanceConfig(
        topology, secrets, args.region, settings, keys, args.geoip_db, not args.no_dns
    )
    return asyncio.run(run_instance(config))


def _cmd_status(args: argparse.Namespace) -> int:
    urls = list(args.url or [])
    if args.topology:
        try:
            urls = instance_urls(load_topology(args.topology))
        except TopologyError as exc:
            print(f"edgemesh status: {exc}", file=sys.stderr)
            return 2
    try:
        url, doc = fetch_regions(urls, args.timeout)
    except NoInstanceAnswered as exc:
        print(f"edgemesh status: {exc}", file=sys.stderr)
        return 1
    print(format_table(url, doc))
    return 0
