"""`edgemesh edge`: run one edge node of the topology."""

from __future__ import annotations

import argparse
from pathlib import Path

from mesh.secrets import api_keys_from_env, load_secrets
from mesh.topology import TopologyError, load_topology


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser("edge", help="run one edge node (WebSocket protocol v1, REST)")
    p.add_argument("--topology", required=True, type=Path, help="topology file (.json or .toml)")
    p.add_argument("--secrets", required=True, type=Path, help="secrets JSON")
    p.add_argument("--region", required=True)
    p.add_argument("--edge", help="edge name in the region (default: the region's first)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run_edge)


def run_edge(args: argparse.Namespace) -> int:
    from edge.node import EdgeNode
    from edge.server import serve
    from edge.settings import EdgeSettings
    from edge.tokens import KeyRing

    topology = load_topology(args.topology)
    secrets = load_secrets(args.secrets)
    secrets.require("edge")
    region = topology.region(args.region)
    if not region.edges:
        raise TopologyError(f"region {region.name!r} has no edges")
    edge = region.edges[0]
    if args.edge is not None:
        matches = [e for e in region.edges if e.name == args.edge]
        if not matches:
            names = ", ".join(e.name for e in region.edges)
            raise TopologyError(f"edge: no edge {args.edge!r} in region {region.name} ({names})")
        edge = matches[0]
    try:
        settings = EdgeSettings.from_env()
        keys = KeyRing.from_pairs([*secrets.api_keys, *api_keys_from_env()])
    except ValueError as exc:
        raise TopologyError(str(exc)) from None
    node = EdgeNode(topology, secrets, region.name, edge.name, keys, settings)
    serve(node, edge.bind_host or edge.host, edge.port, args.log_level)
    return 0
