"""The `edgemesh` command. Each package adds its own subcommands through `register()`."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mesh.nats_config import render_nats_config
from mesh.process import FreePorts, LaunchError
from mesh.secrets import ROLES, generate_secrets, load_secrets
from mesh.topology import (
    DEV_PORT_BASE,
    Topology,
    TopologyError,
    dev_topology,
    load_topology,
    local_topology,
)

# Modules that may add subcommands: each has `register(subparsers) -> None`, and each
# subcommand sets `func` (args -> exit code) with `set_defaults`.
PLUGIN_MODULES = ("edge.cli", "control_plane.cli", "client.cli")

Handler = Callable[[argparse.Namespace], int]


def _cmd_nats_config(args: argparse.Namespace) -> int:
    topology = load_topology(args.topology)
    secrets = load_secrets(args.secrets)
    store = args.store_dir or f"/var/lib/edgemesh/nats/{args.region}-{args.server}"
    sys.stdout.write(render_nats_config(topology, secrets, args.region, args.server, store))
    return 0


def _cmd_secrets(args: argparse.Namespace) -> int:
    if args.for_role is not None:
        if args.source is None:
            raise TopologyError("secrets: --for-role needs --from FILE (the whole secrets file)")
        secrets = load_secrets(args.source).for_role(args.for_role)
    elif args.source is not None:
        raise TopologyError("secrets: --from is only read with --for-role")
    else:
        secrets = generate_secrets(args.key_id)
    doc = secrets.model_dump(mode="json", exclude_none=True)
    if args.tfvars:
        doc = {"secrets": doc}
    text = json.dumps(doc, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    return 0


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _dev_topology(args: argparse.Namespace) -> Topology:
    shape = {
        "--servers-per-region": args.servers_per_region,
        "--edges-per-region": args.edges_per_region,
        "--port-base": args.port_base,
    }
    if args.topology:
        given = [flag for flag, value in shape.items() if value is not None]
        if given:
            raise TopologyError(
                f"{', '.join(given)} shape the built-in topology; with --topology the file "
                "sets each region's servers, edges and ports"
            )
        return load_topology(args.topology)
    servers = args.servers_per_region or 1
    edges = 1 if args.edges_per_region is None else args.edges_per_region
    if args.port_base == 0:
        return local_topology(FreePorts(), servers, edges)
    return dev_topology(DEV_PORT_BASE if args.port_base is None else args.port_base, servers, edges)


def _cmd_dev(args: argparse.Namespace) -> int:
    from mesh.dev import run_dev

    topology = _dev_topology(args)
    available = set(args.subcommands)
    return run_dev(topology, args.data_dir, args.state, available, tls=not args.no_tls)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgemesh", description="Self-hosted multi-region realtime messaging."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("nats-config", help="print one nats-server's config from the topology")
    p.add_argument("--topology", required=True, type=Path, help="topology file (.json or .toml)")
    p.add_argument("--region", required=True)
    p.add_argument("--server", type=int, default=1, help="1-based server number in the region")
    p.add_argument(
        "--secrets",
        type=Path,
        required=True,
        help="secrets JSON (`edgemesh secrets`, or its `--for-role nats` part): every "
        "password of the deployment",
    )
    p.add_argument("--store-dir", help="JetStream store directory")
    p.set_defaults(func=_cmd_nats_config)

    p = sub.add_parser(
        "secrets",
        help="generate fresh NATS credentials and an API key, or cut one role's part of them",
    )
    p.add_argument("--key-id", default="ops", help="id of the generated API key")
    p.add_argument(
        "--for-role",
        choices=ROLES,
        help="print only what this role's machines need from --from: edge or control (its "
        "own NATS password and the API keys), nats (every NATS password, no API key)",
    )
    p.add_argument("--from", dest="source", type=Path, help="the whole secrets file")
    p.add_argument("--tfvars", action="store_true", help='wrap as {"secrets": ...} for Terraform')
    p.add_argument("--out", type=Path, help="write to a new file (mode 0600) instead of stdout")
    p.set_defaults(func=_cmd_secrets)

    p = sub.add_parser("dev", help="run a local multi-region deployment")
    p.add_argument("--topology", type=Path, help="topology file (default: eu, us, ap)")
    p.add_argument("--servers-per-region", type=int, choices=range(1, 6), help="default 1")
    p.add_argument("--edges-per-region", type=_count, help="default 1 (0: no edges)")
    p.add_argument(
        "--port-base", type=int, help=f"first port (default {DEV_PORT_BASE}; 0: any free ports)"
    )
    p.add_argument("--data-dir", type=Path, help="where NATS data and logs go (default: temp)")
    p.add_argument("--state", type=Path, help="write endpoints and pids to this JSON file")
    p.add_argument(
        "--no-tls",
        action="store_true",
        help="NATS in plain text (default: a local CA and TLS on every NATS listener)",
    )
    p.set_defaults(func=_cmd_dev)

    for name in PLUGIN_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name).register(sub)
    parser.set_defaults(subcommands=sorted(sub.choices))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except FileExistsError as exc:
        print(
            f"edgemesh {args.command}: {exc.filename} exists; not overwriting it", file=sys.stderr
        )
        return 2
    except (TopologyError, LaunchError) as exc:
        for line in str(exc).splitlines():
            print(f"edgemesh {args.command}: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
