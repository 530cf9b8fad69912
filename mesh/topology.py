"""The one description of a deployment: regions, their NATS servers, edges and control plane.

Every component (the local launcher, the NATS config renderer, edges, the control
plane, Terraform's cloud-init) reads this same shape. It is pure data: loading it
touches the file system only in :func:`load_topology`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REGION_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
ZONE_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class TopologyError(ValueError):
    """An invalid topology. The message names the offending field, one problem per line."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NatsServer(_Model):
    """One nats-server process of a region's cluster."""

    name: str
    host: str = "127.0.0.1"
    client_port: int = Field(ge=1, le=65535)
    cluster_port: int = Field(ge=1, le=65535)
    gateway_port: int = Field(ge=1, le=65535)
    monitor_port: int = Field(ge=1, le=65535)
    # The address other servers and clients use to reach this one; defaults to host.
    advertise_host: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SERVER_NAME.match(v):
            raise ValueError("must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter or digit")
        return v

    @property
    def public_host(self) -> str:
        return self.advertise_host or self.host

    @property
    def client_url(self) -> str:
        return f"nats://{self.public_host}:{self.client_port}"

    @property
    def cluster_url(self) -> str:
        return f"nats://{self.public_host}:{self.cluster_port}"

    @property
    def gateway_url(self) -> str:
        return f"nats://{self.public_host}:{self.gateway_port}"

    def ports(self) -> dict[str, int]:
        return {
            "client_port": self.client_port,
            "cluster_port": self.cluster_port,
            "gateway_port": self.gateway_port,
            "monitor_port": self.monitor_port,
        }


class Edge(_Model):
    """One edge node: where clients connect (`url` is its HTTP base URL)."""

    name: str
    url: str
    bind_host: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SERVER_NAME.match(v):
            raise ValueError("must be 1-63 of A-Z a-z 0-9 _ -, starting with a letter or digit")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return v.rstrip("/")

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def ws_url(self) -> str:
        scheme = "wss" if self.url.startswith("https") else "ws"
        return f"{scheme}://{self.url.split('://', 1)[1]}/v1/connect"


class ControlPlane(_Model):
    """The region's control-plane instance: its HTTP API and its DNS listener."""

    url: str
    bind_host: str | None = None
    dns_host: str = "127.0.0.1"
    dns_port: int = Field(default=53, ge=1, le=65535)
    # The address the world reaches the DNS listener at, when it is not dns_host (a
    # cloud instance binds its private address behind a public one): the name server's
    # glue. None: dns_host.
    dns_public_address: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        return v.rstrip("/")

    @field_validator("dns_public_address")
    @classmethod
    def _public_address(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            ip = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address") from None
        if ip.is_unspecified:
            raise ValueError(f"{v!r} is the unspecified address, which nobody can reach")
        return str(ip)

    @property
    def advertised_dns_host(self) -> str:
        """Where resolvers reach this DNS server: the glue of its ``ns-REGION`` name."""
        return self.dns_public_address or self.dns_host

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)


class Region(_Model):
    name: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    nats: tuple[NatsServer, ...] = Field(min_length=1)
    edges: tuple[Edge, ...] = ()
    control_plane: ControlPlane | None = None
    # Addresses geo-DNS answers for this region (A and AAAA); default: the edges' IP hosts.
    public_addresses: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not REGION_NAME.match(v):
            raise ValueError(
                "must be 1-32 of a-z 0-9 -, starting with a letter, not ending with '-'"
            )
        return v

    @field_validator("latitude", "longitude")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("public_addresses")
    @classmethod
    def _addresses(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for a in v:
            try:
                ipaddress.ip_address(a)
            except ValueError:
                raise ValueError(f"{a!r} is not an IP address") from None
        return v

    @property
    def stream(self) -> str:
        return f"EM_{self.name}"

    def answer_addresses(self) -> tuple[str, ...]:
        """IP addresses geo-DNS gives for this region."""
        if self.public_addresses:
            return self.public_addresses
        out: list[str] = []
        for e in self.edges:
            try:
                ipaddress.ip_address(e.host)
            except ValueError:
                continue
            if e.host not in out:
                out.append(e.host)
        return tuple(out)


class Dns(_Model):
    zone: str = "edgemesh.test"
    ttl_s: int = Field(default=30, ge=0, le=86400)
    default_region: str | None = None

    @field_validator("zone")
    @classmethod
    def _zone(cls, v: str) -> str:
        v = v.rstrip(".").lower()
        labels = v.split(".")
        if not v or any(not ZONE_LABEL.match(label) for label in labels):
            raise ValueError("must be a DNS name of labels a-z 0-9 -")
        return v


class Tls(_Model):
    """The NATS servers' TLS files (paths on each host; see mesh/tls.py).

    `ca_file` signs every server's certificate; clients verify servers with it, and
    servers verify each other (routes, gateways) with it. `cert_file` and `key_file`
    are the server's own, naming every host it is dialled at."""

    ca_file: str = Field(min_length=1)
    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)


class Topology(_Model):
    regions: tuple[Region, ...] = Field(min_length=1)
    dns: Dns = Dns()
    # None: NATS listeners speak plain text (only for networks the operator trusts).
    tls: Tls | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Topology:
        problems: list[str] = []
        seen: dict[str, int] = {}
        for i, r in enumerate(self.regions):
            if r.name in seen:
                problems.append(
                    f"regions.{i}.name: duplicate region {r.name!r} (also regions.{seen[r.name]})"
                )
            seen.setdefault(r.name, i)
        names: dict[str, str] = {}
        bound: dict[tuple[str, int], str] = {}
        for i, r in enumerate(self.regions):
            for j, s in enumerate(r.nats):
                where = f"regions.{i}.nats.{j}"
                if s.name in names:
                    problems.append(f"{where}.name: duplicate server name {s.name!r}")
                names.setdefault(s.name, where)
                for field, port in s.ports().items():
                    key = (s.public_host, port)
                    if key in bound:
                        problems.append(
                            f"{where}.{field}: port {port} on {s.public_host} clashes with "
                            f"{bound[key]}"
                        )
                    bound.setdefault(key, f"{where}.{field}")
            for j, e in enumerate(r.edges):
                where = f"regions.{i}.edges.{j}"
                if e.name in names:
                    problems.append(f"{where}.name: duplicate name {e.name!r}")
                names.setdefault(e.name, where)
                key = (e.host, e.port)
                if key in bound:
                    problems.append(
                        f"{where}.url: port {e.port} on {e.host} clashes with {bound[key]}"
                    )
                bound.setdefault(key, f"{where}.url")
            if r.control_plane is not None:
                cp = r.control_plane
                where = f"regions.{i}.control_plane"
                for field, key in (
                    ("url", (cp.host, cp.port)),
                    ("dns_port", (cp.dns_host, cp.dns_port)),
                ):
                    if key in bound:
                        problems.append(
                            f"{where}.{field}: port {key[1]} on {key[0]} clashes with {bound[key]}"
                        )
                    bound.setdefault(key, f"{where}.{field}")
        if self.dns.default_region is not None and self.dns.default_region not in seen:
            problems.append(f"dns.default_region: unknown region {self.dns.default_region!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def region(self, name: str) -> Region:
        for r in self.regions:
            if r.name == name:
                return r
        raise TopologyError(f"region: unknown region {name!r} (known: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    @property
    def default_region(self) -> str:
        return self.dns.default_region or self.regions[0].name

    def servers(self) -> Iterator[tuple[Region, NatsServer]]:
        for r in self.regions:
            for s in r.nats:
                yield r, s

    def client_url(self, server: NatsServer) -> str:
        """`server`'s client URL in this deployment (tls:// with TLS)."""
        url = server.client_url
        return url.replace("nats://", "tls://", 1) if self.tls is not None else url

    def monitor_url(self, server: NatsServer) -> str:
        """`server`'s monitoring base URL in this deployment (https with TLS)."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{server.public_host}:{server.monitor_port}"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "\n".join(lines)


def parse_topology(data: Any) -> Topology:
    """Validate a decoded topology document. Raises TopologyError naming every bad field."""
    if not isinstance(data, dict):
        raise TopologyError("topology: must be an object with a 'regions' list")
    try:
        return Topology.model_validate(data)
    except ValidationError as exc:
        raise TopologyError(_format_errors(exc)) from None


def load_topology(path: str | Path) -> Topology:
    """Read a topology from a .json or .toml file. Raises TopologyError with the file name."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TopologyError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TopologyError(
            f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}"
        ) from None
    try:
        return parse_topology(data)
    except TopologyError as exc:
        raise TopologyError("\n".join(f"{p}: {line}" for line in str(exc).splitlines())) from None


DEV_REGIONS: tuple[tuple[str, float, float], ...] = (
    ("eu", 50.11, 8.68),
    ("us", 39.04, -77.49),
    ("ap", 1.35, 103.82),
)


def local_topology(
    next_port: Callable[[], int],
    servers_per_region: int = 1,
    edges_per_region: int = 1,
    regions: tuple[tuple[str, float, float], ...] = DEV_REGIONS,
    host: str = "127.0.0.1",
    zone: str = "edgemesh.test",
) -> Topology:
    """A topology with every process on `host`, each port taken from `next_port()`."""
    if not 1 <= servers_per_region <= 5 or not 0 <= edges_per_region <= 40:
        raise TopologyError("servers_per_region must be 1-5 and edges_per_region 0-40")
    out = []
    for name, lat, lon in regions:
        nats = [
            {
                "name": f"{name}-n{k + 1}",
                "host": host,
                "client_port": next_port(),
                "cluster_port": next_port(),
                "gateway_port": next_port(),
                "monitor_port": next_port(),
            }
            for k in range(servers_per_region)
        ]
        edges = [
            {"name": f"{name}-e{k + 1}", "url": f"http://{host}:{next_port()}"}
            for k in range(edges_per_region)
        ]
        out.append(
            {
                "name": name,
                "latitude": lat,
                "longitude": lon,
                "nats": nats,
                "edges": edges,
                "control_plane": {
                    "url": f"http://{host}:{next_port()}",
                    "dns_host": host,
                    "dns_port": next_port(),
                },
            }
        )
    return parse_topology({"regions": out, "dns": {"zone": zone}})


# `edgemesh dev`'s first port, when not told otherwise.
DEV_PORT_BASE = 14000


def dev_topology(
    port_base: int = DEV_PORT_BASE,
    servers_per_region: int = 1,
    edges_per_region: int = 1,
    regions: tuple[tuple[str, float, float], ...] = DEV_REGIONS,
) -> Topology:
    """The local development topology: consecutive ports from `port_base` up."""
    need = len(regions) * (servers_per_region * 4 + edges_per_region + 2)
    if port_base < 1024 or port_base + need > 65535:
        raise TopologyError(f"port_base: {port_base} leaves ports outside 1024-65535")
    counter = iter(range(port_base, port_base + need))
    return local_topology(lambda: next(counter), servers_per_region, edges_per_region, regions)
