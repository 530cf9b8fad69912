"""`edgemesh sub` and `edgemesh pub`: the Python client from the command line.

Where to connect: ``--state FILE`` (what ``edgemesh dev --state FILE`` writes: every
region's edges and the API key), ``--url`` (edge WebSocket URLs) or ``--route`` (control
plane base URLs). The token: ``--token``, or one minted for this channel from
``--key KEY_ID:SECRET`` (default: the state file's key, then ``EDGEMESH_KEYS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mesh.topology import TopologyError

if TYPE_CHECKING:
    from client import Client


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "sub", help="print a channel's messages as JSON lines (reconnects and resumes)"
    )
    p.add_argument("channel")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--from", dest="cursor", help="resume after this cursor")
    start.add_argument("--rewind", type=int, help="the last N messages first")
    p.add_argument("--count", type=int, help="stop after this many messages")
    _where(p)
    p.set_defaults(func=run_sub)

    p = subparsers.add_parser("pub", help="publish to a channel and print the ack")
    p.add_argument("channel")
    p.add_argument("data", help="the message data: JSON (with --text: any string)")
    p.add_argument("--text", action="store_true", help="send DATA as a string, not JSON")
    p.add_argument("--name", help="the event name")
    p.add_argument("--message-id", help="idempotency key (default: one is made)")
    p.add_argument("--count", type=int, default=1, help="publish it this many times")
    _where(p)
    p.set_defaults(func=run_pub)


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", type=Path, help="the state file of `edgemesh dev --state`")
    p.add_argument("--url", action="append", default=[], help="an edge WebSocket URL")
    p.add_argument("--route", action="append", default=[], help="a control plane base URL")
    p.add_argument("--region", help="with --state: connect to this region first")
    p.add_argument("--token", help="a client token (default: minted from the API key)")
    p.add_argument("--key", help="KEY_ID:SECRET to mint a token with")


def _client(args: argparse.Namespace, ops: list[str]) -> Client:
    from client import Client

    regions: dict[str, list[str]] = {}
    key = args.key
    if args.state is not None:
        try:
            state = json.loads(args.state.read_text())
        except (OSError, ValueError) as exc:
            raise TopologyError(f"cannot read the state file {args.state}: {exc}") from None
        for name, r in state["regions"].items():
            regions[name] = [e["ws_url"] for e in r["edges"]]
        if args.region is not None:
            if args.region not in regions:
                raise TopologyError(f"no region {args.region!r} in {args.state}")
            regions = {args.region: regions.pop(args.region), **regions}
        key = key or state.get("api_key")
    if not (regions or args.url or args.route):
        raise TopologyError("give --state, --url or --route")
    token = args.token or _mint(key, args.channel, ops)
    return Client(token, urls=args.url, regions=regions, route_urls=args.route)


def _mint(key: str | None, channel: str, ops: list[str]) -> str:
    from edge.capabilities import Capabilities
    from edge.tokens import KeyRing
    from mesh.secrets import api_keys_from_env

    pairs = [key] if key else api_keys_from_env()
    if not pairs:
        raise TopologyError("no token: give --token, --key, --state or EDGEMESH_KEYS")
    try:
        ring = KeyRing.from_pairs(pairs[:1])
    except ValueError as exc:
        raise TopologyError(str(exc)) from None
    key_id = pairs[0].split(":", 1)[0]
    caps = Capabilities.parse({channel: ops})
    token, _ = ring.mint(key_id, "edgemesh-cli", caps, time.time(), 3600)
    return token


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_sub(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_sub(args))
    except KeyboardInterrupt:  # Ctrl-C is how one stops it
        return 130


async def _sub(args: argparse.Namespace) -> int:
    from client import ClientError

    c = _client(args, ["subscribe", "history"])
    try:
        await c.start()
        if c.connection is not None:
            _say(f"connected to {c.connection.region} ({c.connection.edge})")
        sub = await c.subscribe(
            args.channel,
            cursor=args.cursor,
            rewind=args.rewind,
            on_discontinuity=lambda s: _say(f"{s.channel}: some messages could not be replayed"),
        )
        seen = 0
        while args.count is None or seen < args.count:
            m = await sub.next()
            doc = {
                "channel": m.channel,
                "serial": m.serial,
                "id": m.id,
                "name": m.name,
                "data": m.data,
                "cursor": m.cursor,
                "timestamp": m.timestamp,
            }
            print(json.dumps(doc, ensure_ascii=False), flush=True)
            seen += 1
        return 0
    except ClientError as exc:
        _say(f"edgemesh sub: {exc}")
        return 1
    finally:
        await c.close()


def run_pub(args: argparse.Namespace) -> int:
    if args.text:
        data: Any = args.data
    else:
        try:
            data = json.loads(args.data)
        except ValueError:
            raise TopologyError(
                f"DATA is not JSON (use --text for a string): {args.data!r}"
            ) from None
    return asyncio.run(_pub(args, data))


async def _pub(args: argparse.Namespace, data: Any) -> int:
    from client import ClientError

    c = _client(args, ["publish"])
    try:
        await c.start()
        for _ in range(args.count):
            ack = await c.publish(args.channel, data, name=args.name, message_id=args.message_id)
            doc = {"serial": ack.serial, "message_id": ack.message_id, "duplicate": ack.duplicate}
            print(json.dumps(doc), flush=True)
        return 0
    except ClientError as exc:
        _say(f"edgemesh pub: {exc}")
        return 1
    finally:
        await c.close()
