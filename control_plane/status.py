"""`edgemesh status`: the regions table from whichever instance answers first."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from mesh.topology import Topology


class NoInstanceAnswered(RuntimeError):
    code = "status.unreachable"


def instance_urls(topology: Topology) -> list[str]:
    return [r.control_plane.url for r in topology.regions if r.control_plane is not None]


def fetch_regions(urls: Sequence[str], timeout: float = 2.0) -> tuple[str, dict[str, Any]]:
    """(url, GET /v1/regions document) from the first instance that answers.

    Raises NoInstanceAnswered listing why each one did not."""
    problems: list[str] = []
    with httpx.Client(timeout=timeout) as http:
        for url in urls:
            try:
                r = http.get(f"{url.rstrip('/')}/v1/regions")
                r.raise_for_status()
                doc: dict[str, Any] = r.json()
                return url, doc
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"{url}: {type(exc).__name__}: {exc}")
    raise NoInstanceAnswered("no control-plane instance answered: " + "; ".join(problems))


def _since(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))


def format_table(url: str, doc: dict[str, Any]) -> str:
    rows = [("REGION", "STATE", "SINCE", "EDGES", "OBSERVED")]
    for r in doc.get("regions", []):
        edges = r.get("edges") or []
        healthy = sum(1 for e in edges if e.get("healthy"))
        observed = r.get("observed") or {}
        note = observed.get("status", "-")
        if observed.get("reasons"):
            note += ": " + "; ".join(observed["reasons"])
        rows.append(
            (
                str(r.get("name")),
                str(r.get("state")),
                _since(r.get("since")),
                f"{healthy}/{len(edges)}",
                note,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"regions as seen by {doc.get('observer', '?')} ({url})"]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4]
        )
    return "\n".join(line.rstrip() for line in lines)
