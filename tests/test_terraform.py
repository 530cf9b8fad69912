"""The Terraform modules and examples, checked offline by terraform itself.

`terraform fmt`, `init` and `validate` on every module and example, then an offline
`terraform plan` of both examples whose JSON is checked for what validate cannot see:
the topology the example outputs is one `edgemesh` reads, each NATS node's cloud-init
renders exactly the config `edgemesh nats-config` gives, only the client port and DNS
are open to the world, and secrets appear in no output and no user data.

Least privilege: each kind of node (edge, control plane, NATS server) has its own
instance role and its own secrets parameter holding only what it needs; the chain from
each node to the SSM parameters its role may read is followed in the planned
configuration, and each node's fetch script is run to see what it gets.

TLS: the topology has `tls`, every node fetches its TLS files from SSM to those paths
(the fetch script of its user data is run here against stand-ins for `aws` and the
instance metadata), the NATS private keys are SecureStrings only NATS servers may
read and appear in no output or user data, and each certificate names every host its
server is dialled at. No registry reachable here ships the tls provider: the pki
module's tls.tf is replaced by a stand-in (tests/terraform_offline.py) whose
"certificates" are text naming the server; tests/test_terraform_hcl.py checks the
real tls.tf.

The one thing a plan cannot know is an Elastic IP; an override file gives the edge
load balancers, the control planes and the NATS servers documentation addresses (RFC
5737) so the topology and the certificates' names are complete. One plan without that
override shows the real wiring has no dependency cycle.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shlex
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from control_plane.dns.message import Question, RRType
from control_plane.dns.names import name_from_text
from control_plane.dns.policy import ZonePolicy
from mesh.cli import build_parser
from mesh.cli import main as edgemesh_main
from mesh.nats_config import render_nats_config
from mesh.pki import issue_server_cert, make_ca
from mesh.secrets import Role, Secrets, generate_secrets, load_secrets
from mesh.supercluster import nats_server_binary
from mesh.topology import Tls, Topology, load_topology
from tests.terraform_offline import (
    OFFLINE_PROVIDER,
    TERRAFORM_TREE,
    Plan,
    Terraform,
    user_data_text,
)

DIRS = (
    "modules/cloud-init",
    "modules/region",
    "modules/dns",
    "modules/pki",  # its tls.tf replaced by the offline stand-in
    "examples/single-region",
    "examples/multi-region",
)
DOMAIN = "example.com"
TOPOLOGY_PATH = "/etc/edgemesh/topology.json"
SECRETS_PATH = "/etc/edgemesh/secrets.json"
RENDER_SCRIPT = "/usr/local/libexec/edgemesh/render-nats-config"
WORLD = ("0.0.0.0/0", "::/0")
GEOIP_URI = "s3://edgemesh-test-geoip/maxmind/GeoLite2-City.mmdb"
GEOIP_PATH = "/var/lib/edgemesh/geoip/city.mmdb"
FETCH_GEOIP = "/usr/local/libexec/edgemesh/fetch-geoip-db"
FETCH_SECRETS = "/usr/local/libexec/edgemesh/fetch-secrets"
TLS = Tls(
    ca_file="/etc/edgemesh/tls/ca.pem",
    cert_file="/etc/edgemesh/tls/nats.pem",
    key_file="/etc/edgemesh/tls/nats-key.pem",
)
# Kinds of node, as modules/region names their resources: what each one's secrets file
# must hold (its NATS passwords; whether the API keys) and the suffix of its parameter.
ROLE_PASSWORDS = {
    "edge": ("edge",),
    "control_plane": ("control",),
    "nats": ("edge", "control", "sys", "route", "gateway"),
}
ROLE_API_KEYS = {"edge": True, "control_plane": True, "nats": False}
# Also edgemesh's name of the role (`edgemesh secrets --for-role`).
ROLE_PARAMETER_SUFFIX: dict[str, Role] = {
    "edge": "edge",
    "control_plane": "control",
    "nats": "nats",
}
# Where the nodes of each kind get their instance profile (the address of the resource
# in modules/region and the path of the expression), and what waits for their secrets.
ROLE_PROFILE_EXPRESSION = {
    "edge": ("aws_launch_template.edge", ("iam_instance_profile", 0, "name")),
    "control_plane": ("aws_instance.control_plane", ("iam_instance_profile",)),
    "nats": ("aws_instance.nats", ("iam_instance_profile",)),
}
ROLE_STARTER = {
    "edge": "aws_autoscaling_group.edge",
    "control_plane": "aws_instance.control_plane",
    "nats": "aws_instance.nats",
}


@pytest.fixture(scope="module")
def tf(tmp_path_factory: pytest.TempPathFactory) -> Terraform:
    return Terraform.offline(tmp_path_factory.mktemp("terraform"))


@pytest.fixture(scope="module")
def initialized() -> set[str]:
    """Folders of the copied tree where `terraform init` has run."""
    return set()


def _init_once(tf: Terraform, initialized: set[str], where: str) -> None:
    if where not in initialized:
        tf.init(where)
        initialized.add(where)


def test_terraform_fmt_is_clean(tf: Terraform) -> None:
    proc = tf.run(".", "fmt", "-check", "-recursive", "-diff", check=False)
    assert proc.returncode == 0, f"terraform fmt would change:\n{proc.stdout}"


@pytest.mark.parametrize("where", DIRS)
def test_validate(tf: Terraform, initialized: set[str], where: str) -> None:
    _init_once(tf, initialized, where)
    result = json.loads(tf.run(where, "validate", "-json", check=False).stdout)
    problems = [
        f"{d['severity']}: {d['summary']}: {d.get('detail', '')}" for d in result["diagnostics"]
    ]
    assert result["valid"], problems
    assert result["warning_count"] == 0, problems


# -- offline plans of the examples -------------------------------------------------------


@dataclass
class ExamplePlan:
    name: str
    plan: Plan
    secrets: Secrets
    edge_addresses: dict[str, list[str]]
    control_plane_addresses: dict[str, str]
    # Per region: the NATS servers' Elastic IPs and their AWS DNS names.
    nats_addresses: dict[str, dict[str, list[str]]]
    topology: Topology
    geoip_db_s3_uri: str | None


def _secrets_var(secrets: Secrets) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(secrets.to_json())
    return data


def _role_secrets(example: ExamplePlan, kind: str) -> dict[str, Any]:
    """The secrets JSON a node of `kind` must get: its passwords, the API keys or none."""
    full = _secrets_var(example.secrets)
    return {
        "nats": {user: full["nats"][user] for user in ROLE_PASSWORDS[kind]},
        "api_keys": full["api_keys"] if ROLE_API_KEYS[kind] else [],
    }


def _node_kind(resource: dict[str, Any]) -> str:
    """edge, control_plane or nats: the kind of node a planned resource starts."""
    kinds = {
        ("aws_launch_template", "edge"): "edge",
        ("aws_instance", "control_plane"): "control_plane",
        ("aws_instance", "nats"): "nats",
    }
    return kinds[(resource["type"], resource["name"])]


def _offline_override(aliases: tuple[str | None, ...], addresses: dict[str, Any] | None) -> str:
    """Providers that never call AWS, and `addresses` (the locals holding Elastic IPs)."""
    blocks = []
    for alias in aliases:
        alias_line = f'  alias = "{alias}"\n' if alias else ""
        blocks.append(f'provider "aws" {{\n{alias_line}{OFFLINE_PROVIDER}}}\n')
    if addresses:
        lines = "".join(f"  {k} = {json.dumps(v)}\n" for k, v in addresses.items())
        blocks.append(f"locals {{\n{lines}}}\n")
    return "\n".join(blocks)


def _example_tfvars(name: str, secrets: Secrets) -> dict[str, Any]:
    tfvars: dict[str, Any] = {
        "domain": DOMAIN,
        "parent_zone_id": "Z0123456789ABCDEFGHIJ",
        "secrets": _secrets_var(secrets),
        "operator_cidrs": ["198.51.100.0/24"],
    }
    if name == "multi-region":
        tfvars["availability_zones"] = {
            "eu": ["eu-central-1a", "eu-central-1b"],
            "us": ["us-east-1a", "us-east-1b"],
            "ap": ["ap-southeast-1a", "ap-southeast-1b"],
        }
        tfvars["ami_ids"] = {r: "ami-0123456789abcdef0" for r in ("eu", "us", "ap")}
        # The operator's GeoIP database: set here, left out of the single-region plan.
        tfvars["geoip_db_s3_uri"] = GEOIP_URI
    else:
        tfvars["availability_zones"] = ["eu-central-1a", "eu-central-1b"]
        tfvars["ami_id"] = "ami-0123456789abcdef0"
    return tfvars


def _plan_example(tf: Terraform, initialized: set[str], name: str, tmp: Path) -> ExamplePlan:
    where = f"examples/{name}"
    _init_once(tf, initialized, where)
    secrets = generate_secrets("ops")
    tfvars = _example_tfvars(name, secrets)
    regions = ("eu", "us", "ap") if name == "multi-region" else ("eu",)
    nats_addresses = {
        r: {
            "public_ips": [f"192.0.2.{10 * i + k}" for k in (1, 2, 3)],
            "public_dns": [f"ec2-192-0-2-{10 * i + k}.compute.amazonaws.com" for k in (1, 2, 3)],
        }
        for i, r in enumerate(regions)
    }
    if name == "multi-region":
        edge_addresses = {
            r: [f"203.0.113.{10 * i + 1}", f"203.0.113.{10 * i + 2}"] for i, r in enumerate(regions)
        }
        cp_addresses = {r: f"198.51.100.{53 + i}" for i, r in enumerate(regions)}
        override = _offline_override(
            ("eu", "us", "ap", "dns"),
            {
                "edge_addresses": edge_addresses,
                "control_plane_addresses": cp_addresses,
                "nats_addresses": nats_addresses,
            },
        )
    else:
        edge_addresses = {"eu": ["203.0.113.1", "203.0.113.2"]}
        cp_addresses = {"eu": "198.51.100.53"}
        override = _offline_override(
            (None,),
            {
                "edge_addresses": edge_addresses["eu"],
                "control_plane_address": cp_addresses["eu"],
                "nats_addresses": nats_addresses["eu"],
            },
        )
    plan = tf.plan(where, tfvars, override)
    # What an operator does after apply: save the output for `edgemesh` commands.
    topology_file = tmp / f"{name}-topology.json"
    topology_file.write_text(plan.output("topology"))
    return ExamplePlan(
        name,
        plan,
        secrets,
        edge_addresses,
        cp_addresses,
        nats_addresses,
        load_topology(topology_file),
        tfvars.get("geoip_db_s3_uri"),
    )


@pytest.fixture(scope="module", params=["single-region", "multi-region"])
def example(
    request: pytest.FixtureRequest,
    tf: Terraform,
    initialized: set[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> ExamplePlan:
    return _plan_example(tf, initialized, request.param, tmp_path_factory.mktemp("plan"))


def _cloud_init(user_data_b64: str) -> dict[str, Any]:
    text = user_data_text(user_data_b64)
    assert text.startswith("#cloud-config\n")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def _files(doc: dict[str, Any]) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def _unit_lines(doc: dict[str, Any], key: str) -> list[list[str]]:
    unit = _files(doc)["/etc/systemd/system/edgemesh.service"]
    return [
        shlex.split(line.split("=", 1)[1])
        for line in unit.splitlines()
        if line.startswith(key + "=")
    ]


def _region_of(resource: dict[str, Any]) -> str:
    tags: dict[str, str] = resource["change"]["after"]["tags"]
    return tags["edgemesh:region"]


def test_example_outputs_a_topology_edgemesh_reads(example: ExamplePlan) -> None:
    t = example.topology
    expected_regions = ["eu", "us", "ap"] if example.name == "multi-region" else ["eu"]
    assert list(t.names) == expected_regions
    assert t.dns.zone == f"geo.{DOMAIN}"
    for r in t.regions:
        assert list(r.public_addresses) == example.edge_addresses[r.name]
        assert len(r.nats) == 3
        for k, s in enumerate(r.nats, start=1):
            assert (s.name, s.host, s.advertise_host) == (
                f"{r.name}-n{k}",
                "0.0.0.0",
                f"nats-{k}.{r.name}.{DOMAIN}",
            )
        assert [e.url for e in r.edges] == [f"http://edge.{r.name}.{DOMAIN}"]
        assert r.control_plane is not None
        assert r.control_plane.url == f"http://cp.{r.name}.{DOMAIN}:8080"
        # Bound on the private address, advertised at the Elastic IP.
        assert r.control_plane.dns_host.startswith("10.")
        assert r.control_plane.dns_public_address == example.control_plane_addresses[r.name]
    # NATS speaks TLS only; every node has the files at these paths.
    assert t.tls == TLS


def test_gateway_urls_are_stable_dns_names_known_before_apply(example: ExamplePlan) -> None:
    # Known at plan time, so they cannot come from any region's resources.
    outputs = example.plan.output("gateway_urls")
    by_region = outputs if isinstance(outputs, dict) else {"eu": outputs}
    assert by_region == {r.name: [s.gateway_url for s in r.nats] for r in example.topology.regions}


def test_nats_nodes_render_the_config_edgemesh_gives(
    example: ExamplePlan, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = example.plan.resources("aws_instance", "nats")
    assert len(nodes) == 3 * len(example.topology.regions)
    parameters = {
        _region_of(p): p["change"]["after"]
        for p in example.plan.resources("aws_ssm_parameter", "secrets_nats")
    }
    checked_with_nats_server = False
    for node in nodes:
        after = node["change"]["after"]
        region, server = _region_of(node), node["index"] + 1
        assert after["tags"]["Name"] == example.topology.region(region).nats[server - 1].name
        doc = _cloud_init(after["user_data_base64"])
        files = _files(doc)
        assert json.loads(files[TOPOLOGY_PATH]) == json.loads(example.plan.output("topology"))

        # The node's secrets file is the NATS servers' SSM parameter's value, fetched at
        # boot: every NATS password, no API key; enough for the whole config.
        parameter = parameters[region]
        assert parameter["type"] == "SecureString"
        assert parameter["name"] == f"/edgemesh/{region}/secrets/nats"
        assert parameter["name"] in files["/usr/local/libexec/edgemesh/fetch-secrets"]
        (tmp_path / "secrets.json").write_text(parameter["value"])
        loaded = load_secrets(tmp_path / "secrets.json")
        assert loaded.nats == example.secrets.nats
        assert loaded.api_keys == ()
        (tmp_path / "topology.json").write_text(files[TOPOLOGY_PATH])

        [line] = [ln for ln in files[RENDER_SCRIPT].splitlines() if " nats-config " in ln]
        argv, redirect = shlex.split(line.split(">", 1)[0]), line.split(">", 1)[1].strip()
        assert argv[:2] == ["/opt/edgemesh/bin/edgemesh", "nats-config"]
        local = {
            TOPOLOGY_PATH: str(tmp_path / "topology.json"),
            SECRETS_PATH: str(tmp_path / "secrets.json"),
        }
        assert edgemesh_main([local.get(a, a) for a in argv[1:]]) == 0
        rendered = capsys.readouterr().out
        store_dir = argv[argv.index("--store-dir") + 1]
        assert rendered == render_nats_config(
            example.topology, example.secrets, region, server, store_dir
        )
        # The service runs nats-server on the file the script renders.
        [start] = _unit_lines(doc, "ExecStart")
        assert start == ["/opt/edgemesh/bin/nats-server", "-c", redirect.removesuffix(".new")]
        if not checked_with_nats_server:
            # With certificates made like the pki module's, named as planned, at the
            # topology's TLS paths (here in tmp_path).
            assert example.topology.tls is not None
            names = example.plan.output("nats_certificate_names")[after["tags"]["Name"]]
            for path, data in _real_tls_files(names).items():
                local_path = tmp_path / Path(path).name
                local_path.write_bytes(data)
                rendered = rendered.replace(json.dumps(path), json.dumps(str(local_path)))
            assert "/etc/edgemesh" not in rendered
            conf = tmp_path / "nats.conf"
            conf.write_text(rendered)
            proc = subprocess.run(
                [nats_server_binary(), "-t", "-c", str(conf)], capture_output=True, text=True
            )
            assert proc.returncode == 0, proc.stderr
            checked_with_nats_server = True


def _real_tls_files(names: dict[str, list[str]]) -> dict[str, bytes]:
    """A CA, and a server certificate with the planned names, at the topology's paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca = make_ca("test CA", now, datetime.timedelta(days=1))
    hosts = names["dns_names"] + names["ip_addresses"]
    server = issue_server_cert(ca, "test server", hosts, now, datetime.timedelta(days=1))
    return {TLS.ca_file: ca.cert, TLS.cert_file: server.cert, TLS.key_file: server.key}


def test_nats_certificates_name_every_host_they_are_dialled_at(example: ExamplePlan) -> None:
    """The names the pki module puts in each server's certificate: the host of every URL
    edgemesh dials it at (routes, gateways, clients, monitoring: the advertise_host),
    and its Elastic IP with that address's AWS name; addresses as IP SANs, names as
    DNS SANs; never the wildcard it binds."""
    names = example.plan.output("nats_certificate_names")
    assert set(names) == {s.name for _, s in example.topology.servers()}
    for region, s in example.topology.servers():
        k = region.nats.index(s)
        addresses = example.nats_addresses[region.name]
        dns_names, ip_addresses = names[s.name]["dns_names"], names[s.name]["ip_addresses"]
        assert dns_names == [s.advertise_host, addresses["public_dns"][k]]
        assert ip_addresses == [addresses["public_ips"][k]]
        for url in (
            example.topology.client_url(s),
            example.topology.monitor_url(s),
            s.cluster_url,
            s.gateway_url,
        ):
            host = url.split("://", 1)[1].rsplit(":", 1)[0]
            assert host in dns_names, (s.name, url)
        assert all(ipaddress.ip_address(a) for a in ip_addresses)
        for n in dns_names:
            with pytest.raises(ValueError):
                ipaddress.ip_address(n)
        assert s.host not in dns_names + ip_addresses  # 0.0.0.0
    # The parameters each NATS server fetches hold its own certificate (the stand-in
    # names its server and the names it was asked for).
    certs = {
        p["change"]["after"]["name"]: p["change"]["after"]["value"]
        for p in example.plan.resources("aws_ssm_parameter", "nats_cert")
    }
    assert len(certs) == len(names)
    for region, s in example.topology.servers():
        k = region.nats.index(s) + 1
        cert = certs[f"/edgemesh/{region.name}/tls/nats-{k}.pem"]
        assert f"certificate of {s.name}\nDNS:{','.join(names[s.name]['dns_names'])}\n" in cert


def _node_parameters(example: ExamplePlan) -> dict[str, dict[str, Any]]:
    """Every SSM parameter a node may fetch (secrets and TLS files), by name."""
    secrets = ("secrets_edge", "secrets_control_plane", "secrets_nats")
    names = (*secrets, "tls_ca", "nats_cert", "nats_key")
    return {
        p["change"]["after"]["name"]: p
        for name in names
        for p in example.plan.resources("aws_ssm_parameter", name)
    }


def _run_fetch_secrets(
    script: str, parameters: dict[str, str], root: Path
) -> tuple[list[str], list[str]]:
    """Run a node's fetch-secrets with its paths under `root`, SSM answering with
    `parameters` (name -> value) and no instance metadata. Returns the parameter names
    it asked for and the arguments of every chown."""
    bin_dir, values = root / "bin", root / "values"
    (root / "etc" / "edgemesh").mkdir(parents=True)  # cloud-init's write_files makes it
    bin_dir.mkdir()
    for name, value in parameters.items():
        (values / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        # What `aws ... --output text` prints: the value and a newline.
        (values / name.lstrip("/")).write_text(value + "\n")
    log = root / "log"
    fakes = {
        "curl": '#!/bin/sh\ncase "$*" in *PUT*) echo token ;; *) echo eu-central-1 ;; esac\n',
        "aws": (
            "#!/bin/sh\n"
            'while [ $# -gt 0 ]; do [ "$1" = --name ] && name=$2; shift; done\n'
            f'echo "get $name" >> {log}\n'
            f'cat "{values}$name"\n'
        ),
        "chown": f'#!/bin/sh\necho "chown $*" >> {log}\n',
    }
    for name, text in fakes.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    local = script.replace("/etc/edgemesh/", f"{root}/etc/edgemesh/")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", local], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    gets = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("get ")]
    chowns = [ln.split(" ", 1)[1] for ln in lines if ln.startswith("chown ")]
    return gets, chowns


def test_nodes_fetch_their_tls_files_from_ssm(example: ExamplePlan, tmp_path: Path) -> None:
    """Each node's fetch-secrets (run before every start) puts its role's secrets
    parameter at the secrets path (0600) and the CA certificate at the topology's
    ca_file; a NATS server also its own certificate and key at cert_file and key_file,
    the key 0600 and owned by edgemesh. Edges and control planes fetch no certificate or
    key. Every parameter a node fetches is one its instance role may read."""
    assert example.topology.tls == TLS
    parameters = _node_parameters(example)
    readable = _readable_parameters(example)
    values = {n: p["change"]["after"]["value"] for n, p in parameters.items()}
    types = {n: p["change"]["after"]["type"] for n, p in parameters.items()}
    nodes = [
        (r, r["change"]["after"]["user_data_base64"])
        for r in example.plan.resources("aws_instance")
    ] + [
        (r, r["change"]["after"]["user_data"])
        for r in example.plan.resources("aws_launch_template")
    ]
    assert len(nodes) == 5 * len(example.topology.regions)
    for i, (resource, user_data) in enumerate(nodes):
        region = _region_of(resource)
        prefix = f"/edgemesh/{region}"
        root = tmp_path / str(i)
        gets, chowns = _run_fetch_secrets(
            _files(_cloud_init(user_data))[FETCH_SECRETS], values, root
        )
        kind = _node_kind(resource)
        assert set(gets) <= readable[(region, kind)], (resource["address"], gets)
        # Its role's secrets, and nothing else, where the services read them.
        secrets_parameter = f"{prefix}/secrets/{ROLE_PARAMETER_SUFFIX[kind]}"
        assert gets[0] == secrets_parameter
        secrets_file = root / SECRETS_PATH.lstrip("/")
        assert secrets_file.read_text() == values[secrets_parameter] + "\n"
        assert json.loads(secrets_file.read_text()) == _role_secrets(example, kind)
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        assert types[secrets_parameter] == "SecureString"
        ca = root / TLS.ca_file.lstrip("/")
        assert ca.read_text() == values[f"{prefix}/tls/ca.pem"] + "\n"
        assert stat.S_IMODE(ca.stat().st_mode) == 0o644
        assert types[f"{prefix}/tls/ca.pem"] == "String"
        cert = root / TLS.cert_file.lstrip("/")
        key = root / TLS.key_file.lstrip("/")
        if kind != "nats":
            assert gets == [secrets_parameter, f"{prefix}/tls/ca.pem"]
            assert not cert.exists() and not key.exists()
            continue
        server = resource["index"] + 1
        assert gets == [
            secrets_parameter,
            f"{prefix}/tls/ca.pem",
            f"{prefix}/tls/nats-{server}.pem",
            f"{prefix}/tls/nats-{server}-key.pem",
        ]
        name = resource["change"]["after"]["tags"]["Name"]
        assert cert.read_text() == values[f"{prefix}/tls/nats-{server}.pem"] + "\n"
        assert f"certificate of {name}\n" in cert.read_text()
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644
        assert key.read_text() == values[f"{prefix}/tls/nats-{server}-key.pem"] + "\n"
        assert f"key of {name}\n" in key.read_text()
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert types[f"{prefix}/tls/nats-{server}-key.pem"] == "SecureString"
        assert f"edgemesh:edgemesh {key}.new" in chowns


def _region_modules(example: ExamplePlan) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per region: the region module's address in the plan and its configuration."""
    calls = example.plan.data["configuration"]["root_module"]["module_calls"]
    if example.name == "multi-region":
        return {n: (f"module.{n}", calls[n]["module"]) for n in example.topology.names}
    [name] = example.topology.names
    return {name: ("module.region", calls["region"]["module"])}


def _object(reference: str) -> str:
    """The resource or data source a reference names (its attribute dropped)."""
    parts = reference.split(".")
    return ".".join(parts[: 3 if parts[0] == "data" else 2])


@dataclass
class RoleChain:
    """How a kind of node reaches SSM, as configured in a region module."""

    profile: str
    role: str
    policies: set[str]  # inline policies of the role
    attachments: set[str]  # managed policy attachments of the role
    parameters: set[str]  # the aws_ssm_parameter resources its policies name
    parameter_names: set[str]  # their planned names


def _objects(resources: dict[str, Any], address: str, *path: str | int) -> set[str]:
    """What an expression of a configured resource refers to (resources and data)."""
    expr: Any = resources[address]["expressions"]
    for step in path:
        expr = expr[step]
    return {_object(ref) for ref in expr.get("references", [])}


def _attached_to(resources: dict[str, Any], type_: str, role: str) -> set[str]:
    """The configured resources of `type_` whose `role` is `role`."""
    return {
        a
        for a, r in resources.items()
        if r["type"] == type_ and _objects(resources, a, "role") == {role}
    }


def _role_chains(example: ExamplePlan) -> dict[tuple[str, str], RoleChain]:
    """Per (region, kind of node): node -> instance profile -> role -> its policies ->
    policy documents -> SSM parameters -> the parameters' planned names."""
    chains = {}
    for region, (address, m) in _region_modules(example).items():
        resources = {r["address"]: r for r in m["resources"]}
        for kind, (node, path) in ROLE_PROFILE_EXPRESSION.items():
            [profile] = _objects(resources, node, *path)
            [role] = _objects(resources, profile, "role")
            policies = _attached_to(resources, "aws_iam_role_policy", role)
            parameters: set[str] = set()
            for policy in policies:
                docs = {
                    d
                    for d in _objects(resources, policy, "policy")
                    if d.startswith("data.aws_iam_policy_document.")
                }
                # The one policy not built from a document is the GeoIP object's
                # (jsonencode; its planned text is checked with the GeoIP database).
                assert docs or policy == "aws_iam_role_policy.geoip", policy
                for doc in docs:
                    [statement] = resources[doc]["expressions"]["statement"]
                    # Allow (the default), GetParameter, on these resources: nothing else.
                    assert set(statement) == {"actions", "resources"}, doc
                    assert statement["actions"]["constant_value"] == ["ssm:GetParameter"]
                    parameters |= _objects(resources, doc, "statement", 0, "resources")
            assert all(p.startswith("aws_ssm_parameter.") for p in parameters), parameters
            names = {
                r["change"]["after"]["name"]
                for p in parameters
                for r in example.plan.resources(*p.split("."))
                if r["module_address"] == address
            }
            chains[(region, kind)] = RoleChain(
                profile,
                role,
                policies,
                _attached_to(resources, "aws_iam_role_policy_attachment", role),
                parameters,
                names,
            )
    return chains


def _readable_parameters(example: ExamplePlan) -> dict[tuple[str, str], set[str]]:
    return {k: c.parameter_names for k, c in _role_chains(example).items()}


def test_each_kind_of_node_has_its_own_role_reading_only_its_parameters(
    example: ExamplePlan,
) -> None:
    """Edges, the control plane and NATS servers each have their own instance profile
    and role. The edges' role may read the edges' secrets and the CA certificate; the
    control plane's the control plane's secrets, the CA certificate (and the GeoIP
    object, its own policy); the NATS servers' the NATS servers' secrets, the CA
    certificate and the servers' certificates and keys. Nothing else."""
    chains = _role_chains(example)
    assert {region for region, _ in chains} == set(example.topology.names)
    for region in example.topology.names:
        prefix = f"/edgemesh/{region}"
        by_kind = {kind: chains[(region, kind)] for kind in ROLE_PASSWORDS}
        # Three profiles, three roles: no two kinds of node share one.
        assert len({c.profile for c in by_kind.values()}) == 3
        assert len({c.role for c in by_kind.values()}) == 3
        servers = len(example.topology.region(region).nats)
        server_files = {
            f"{prefix}/tls/nats-{k}{suffix}.pem"
            for k in range(1, servers + 1)
            for suffix in ("", "-key")
        }
        assert {kind: c.parameter_names for kind, c in by_kind.items()} == {
            "edge": {f"{prefix}/secrets/edge", f"{prefix}/tls/ca.pem"},
            "control_plane": {f"{prefix}/secrets/control", f"{prefix}/tls/ca.pem"},
            "nats": {f"{prefix}/secrets/nats", f"{prefix}/tls/ca.pem"} | server_files,
        }
        # Besides reading SSM, only the control plane's role has a policy: the GeoIP
        # database's (planned only with geoip_db_s3_uri, checked below).
        assert {kind: len(c.policies) for kind, c in by_kind.items()} == {
            "edge": 1,
            "control_plane": 2,
            "nats": 1,
        }
        assert "aws_iam_role_policy.geoip" in by_kind["control_plane"].policies
        # And each may be reached by SSM Session Manager (one attachment each).
        assert all(len(c.attachments) == 1 for c in by_kind.values())
        # What starts the nodes waits for their parameters and their role's policies.
        _, m = _region_modules(example)[region]
        resources = {r["address"]: r for r in m["resources"]}
        for kind, chain in by_kind.items():
            depends_on = set(resources[ROLE_STARTER[kind]]["depends_on"])
            assert depends_on == chain.parameters | chain.policies, kind
    # Three roles per region, each with AmazonSSMManagedInstanceCore and nothing more.
    roles = 3 * len(example.topology.regions)
    assert len(example.plan.resources("aws_iam_role")) == roles
    assert len(example.plan.resources("aws_iam_instance_profile")) == roles
    attached = [
        r["change"]["after"]["policy_arn"].rsplit("/", 1)[1]
        for r in example.plan.resources("aws_iam_role_policy_attachment")
    ]
    assert attached == ["AmazonSSMManagedInstanceCore"] * roles


def test_each_roles_secrets_parameter_holds_only_what_it_needs(
    example: ExamplePlan, tmp_path: Path
) -> None:
    """Per region three SecureStrings and no other parameter holding a secret: the
    edges' (the edge password, the API keys), the control plane's (the control
    password, the API keys) and the NATS servers' (every password, no API key). Each
    is what `edgemesh secrets --for-role` cuts for that role, and what the role's
    component accepts at start-up."""
    full = _secrets_var(example.secrets)
    secrets = {f"nats.{user}": password for user, password in full["nats"].items()}
    secrets |= {f"api_keys[{i}]": k.split(":", 1)[1] for i, k in enumerate(full["api_keys"])}
    holding = [
        p["change"]
        for p in example.plan.resources("aws_ssm_parameter")
        if any(v in p["change"]["after"]["value"] for v in secrets.values())
    ]
    by_name = {c["after"]["name"]: c for c in holding}
    assert len(by_name) == len(holding)
    kind_of = {suffix: kind for kind, suffix in ROLE_PARAMETER_SUFFIX.items()}
    assert set(by_name) == {
        f"/edgemesh/{r}/secrets/{suffix}" for r in example.topology.names for suffix in kind_of
    }
    for region in example.topology.names:
        settings = []
        for suffix, kind in kind_of.items():
            change = by_name[f"/edgemesh/{region}/secrets/{suffix}"]
            after = change["after"]
            assert after["tags"]["edgemesh:region"] == region
            assert after["type"] == "SecureString"
            value = json.loads(after["value"])
            assert value == _role_secrets(example, kind)
            role = ROLE_PARAMETER_SUFFIX[kind]
            assert value == json.loads(example.secrets.for_role(role).to_json())
            (tmp_path / "secrets.json").write_text(after["value"])
            loaded = load_secrets(tmp_path / "secrets.json")
            loaded.require(role)  # what the component checks before it starts
            assert loaded == example.secrets.for_role(role)
            # Spelled out: exactly these passwords, and API keys only where needed.
            assert sorted(value["nats"]) == sorted(ROLE_PASSWORDS[kind])
            assert bool(value["api_keys"]) is ROLE_API_KEYS[kind]
            allowed = {f"nats.{u}" for u in ROLE_PASSWORDS[kind]}
            allowed |= (
                {k for k in secrets if k.startswith("api_keys")} if ROLE_API_KEYS[kind] else set()
            )
            for label, secret in secrets.items():
                assert (secret in after["value"]) is (label in allowed), (after["name"], label)
            # The same SecureString settings (tier, the default KMS key) for all three.
            others = {k: v for k, v in after.items() if k not in ("name", "value", "description")}
            settings.append((others, change["after_unknown"], change["after_sensitive"]))
        assert settings[0] == settings[1] == settings[2]
        assert settings[0][1]["key_id"] is True  # no key given: AWS's default for SSM


def test_edges_and_control_plane_run_their_commands(example: ExamplePlan) -> None:
    common = ["--topology", TOPOLOGY_PATH, "--secrets", SECRETS_PATH]
    templates = example.plan.resources("aws_launch_template", "edge")
    control_planes = example.plan.resources("aws_instance", "control_plane")
    assert len(templates) == len(control_planes) == len(example.topology.regions)
    for lt in templates:
        region = example.topology.region(_region_of(lt))
        doc = _cloud_init(lt["change"]["after"]["user_data"])
        assert _unit_lines(doc, "ExecStart") == [
            [
                "/opt/edgemesh/bin/edgemesh",
                "edge",
                *common,
                "--region",
                region.name,
                "--edge",
                region.edges[0].name,
            ]
        ]
        assert ["/opt/edgemesh/bin/pip", "install", "--no-cache-dir", "edgemesh==0.1.0"] in doc[
            "runcmd"
        ]
    geoip = ["--geoip-db", GEOIP_PATH] if example.geoip_db_s3_uri else []
    for cp in control_planes:
        after = cp["change"]["after"]
        region = example.topology.region(_region_of(cp))
        doc = _cloud_init(after["user_data_base64"])
        [start] = _unit_lines(doc, "ExecStart")
        assert start == [
            "/opt/edgemesh/bin/edgemesh",
            "control-plane",
            *common,
            "--region",
            region.name,
            *geoip,
        ]
        # The DNS listener's address in the topology is the instance's own address.
        assert region.control_plane is not None
        assert after["private_ip"] == region.control_plane.dns_host


def test_only_the_client_port_and_dns_are_open_to_the_world(example: ExamplePlan) -> None:
    client_ports = {r.edges[0].port for r in example.topology.regions}
    assert client_ports == {80}
    nats_ports = {p for _, s in example.topology.servers() for p in s.ports().values()}
    rules = [
        r
        for r in example.plan.resources("aws_security_group_rule")
        if r["change"]["after"]["type"] == "ingress"
    ]
    assert rules
    open_to_world = set()
    for rule in rules:
        after = rule["change"]["after"]
        cidrs = (after.get("cidr_blocks") or []) + (after.get("ipv6_cidr_blocks") or [])
        if any(c in WORLD for c in cidrs):
            open_to_world.add((after["protocol"], after["from_port"], after["to_port"]))
        if after["from_port"] in nats_ports:
            assert not any(c in WORLD for c in cidrs), rule["address"]
    assert open_to_world == {("tcp", 80, 80), ("tcp", 53, 53), ("udp", 53, 53)}
    # Gateways admit the other regions' NATS servers, whose addresses exist only after
    # apply: the rule is there, and each region's module is wired to its peers' servers.
    gateway_rules = [r for r in rules if r["index"].startswith("nats-gateway-")]
    many = len(example.topology.regions) > 1
    assert len(gateway_rules) == (len(example.topology.regions) if many else 0)
    calls = example.plan.data["configuration"]["root_module"]["module_calls"]
    for name in example.topology.names if many else ():
        refs = set(calls[name]["expressions"]["peer_nats_cidrs"]["references"])
        assert {f"module.{o}.nats_public_ips" for o in example.topology.names if o != name} <= refs
        assert f"module.{name}.nats_public_ips" not in refs
    # Operators reach the API and monitoring; nobody else from outside.
    api = [r for r in rules if r["index"] == "cp-api-operators"]
    assert all(r["change"]["after"]["cidr_blocks"] == ["198.51.100.0/24"] for r in api)


def test_control_planes_get_the_operators_geoip_database(example: ExamplePlan) -> None:
    """With geoip_db_s3_uri set, each control plane fetches it and runs with --geoip-db;
    without, no database, and the unit says every client gets the default region."""
    parser = build_parser()
    policies = example.plan.resources("aws_iam_role_policy", "geoip")
    for cp in example.plan.resources("aws_instance", "control_plane"):
        doc = _cloud_init(cp["change"]["after"]["user_data_base64"])
        files = _files(doc)
        [start] = _unit_lines(doc, "ExecStart")
        # What `edgemesh control-plane` makes of its command line.
        args = parser.parse_args(start[1:])
        pre = [argv[0] for argv in _unit_lines(doc, "ExecStartPre")]
        if example.geoip_db_s3_uri is None:
            assert args.geoip_db is None
            assert FETCH_GEOIP not in files and f"+{FETCH_GEOIP}" not in pre
            unit = files["/etc/systemd/system/edgemesh.service"]
            assert "every client gets the default region" in unit
            continue
        assert args.geoip_db == Path(GEOIP_PATH)
        # Fetched before every start, after the secrets, by root (the `+` prefix).
        assert pre == ["+/usr/local/libexec/edgemesh/fetch-secrets", f"+{FETCH_GEOIP}"]
        script = files[FETCH_GEOIP]
        assert f"src={GEOIP_URI}\n" in script and f"dest={GEOIP_PATH}\n" in script
        assert 'aws s3 cp --only-show-errors --region "$region" "$src" "$dest.new"' in script
    # Only control planes: edges and NATS servers run without it.
    others = [
        _cloud_init(r["change"]["after"]["user_data_base64"])
        for r in example.plan.resources("aws_instance", "nats")
    ] + [
        _cloud_init(r["change"]["after"]["user_data"])
        for r in example.plan.resources("aws_launch_template", "edge")
    ]
    for doc in others:
        assert FETCH_GEOIP not in _files(doc)
        assert not any("--geoip-db" in argv for argv in _unit_lines(doc, "ExecStart"))
    # The control plane's instance role may read that one object, in every region, and
    # nothing else in S3; no other role may.
    for (_, kind), chain in _role_chains(example).items():
        assert ("aws_iam_role_policy.geoip" in chain.policies) is (kind == "control_plane")
    if example.geoip_db_s3_uri is None:
        assert policies == []
        return
    assert len(policies) == len(example.topology.regions)
    for p in policies:
        statements = json.loads(p["change"]["after"]["policy"])["Statement"]
        assert statements == [
            {
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::edgemesh-test-geoip/maxmind/GeoLite2-City.mmdb",
            }
        ]


def test_secrets_appear_in_no_output_and_no_user_data(example: ExamplePlan) -> None:
    values = [*json.loads(example.secrets.model_dump_json())["nats"].values()]
    values += [k.split(":", 1)[1] for k in example.secrets.api_keys]
    # The NATS servers' private keys (the stand-in's, one per server, each unique).
    keys = [p["change"]["after"] for p in example.plan.resources("aws_ssm_parameter", "nats_key")]
    assert len(keys) == len(list(example.topology.servers()))
    assert all(k["type"] == "SecureString" and "PRIVATE KEY" in k["value"] for k in keys)
    key_texts = [k["value"].split("-----")[2].strip() for k in keys]
    assert len(set(key_texts)) == len(keys)
    assert all(t.startswith("OFFLINE STAND-IN key of ") for t in key_texts)
    values += key_texts
    outputs = json.dumps(example.plan.data["output_changes"])
    texts = [outputs]
    for r in example.plan.resources("aws_instance"):
        texts.append(user_data_text(r["change"]["after"]["user_data_base64"]))
    for r in example.plan.resources("aws_launch_template"):
        texts.append(user_data_text(r["change"]["after"]["user_data"]))
    for text in texts:
        for v in values:
            assert v not in text


def test_dns_delegates_the_zone_to_every_control_plane(example: ExamplePlan) -> None:
    zone = example.topology.dns.zone
    records = {
        (r["change"]["after"]["name"], r["change"]["after"]["type"]): r
        for r in example.plan.resources("aws_route53_record")
    }
    names = example.topology.names
    delegation = records[(zone, "NS")]["change"]["after"]
    assert sorted(delegation["records"]) == sorted(f"ns-{n}.{zone}" for n in names)
    for n in names:
        assert (f"ns-{n}.{zone}", "A") in records  # glue, checked below
        assert (f"edge.{n}.{DOMAIN}", "A") in records
        assert (f"cp.{n}.{DOMAIN}", "A") in records
    cnames = {name for (name, type_) in records if type_ == "CNAME"}
    assert cnames == {s.advertise_host for _, s in example.topology.servers()}


def _records_by_name(plan: Plan) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["change"]["after"]["name"], r["change"]["after"]["type"]): r
        for r in plan.resources("aws_route53_record")
    }


def _expression_refs(module: dict[str, Any], kind: str, name: str, attr: str) -> set[str]:
    if kind == "output":
        expr = module["outputs"][name]["expression"]
    else:
        [res] = [r for r in module["resources"] if r["address"] == name]
        expr = res["expressions"][attr]
    return set(expr.get("references", []))


def test_glue_is_the_elastic_ip_the_dns_server_advertises(example: ExamplePlan) -> None:
    """Route 53's glue for ns-REGION.ZONE, the topology's dns_public_address and the
    geo-DNS server's own answer are one address: the control plane's Elastic IP."""
    zone = example.topology.dns.zone
    records = _records_by_name(example.plan)
    policy = ZonePolicy(example.topology)
    for r in example.topology.regions:
        assert r.control_plane is not None
        advertised = r.control_plane.dns_public_address
        assert advertised == example.control_plane_addresses[r.name]
        glue = records[(f"ns-{r.name}.{zone}", "A")]["change"]["after"]
        assert glue["records"] == [advertised]
        # What the server itself answers (a resolver that trusts the child gets this).
        question = Question(name_from_text(f"ns-{r.name}.{zone}"), int(RRType.A), 1)
        answer = policy.answer(question, "192.0.2.1", {}, lambda _: None)
        assert [str(rec.data) for rec in answer.answer] == [advertised]
        apex = policy.answer(
            Question(name_from_text(zone), int(RRType.NS), 1), "", {}, lambda _: None
        )
        assert (name_from_text(f"ns-{r.name}.{zone}"), advertised) in {
            (rec.name, str(rec.data)) for rec in apex.additional
        }
    # The example takes that address from each region module's control_plane_public_ip
    # (the override file only stands in for its value), which is the Elastic IP
    # associated with the control-plane instance.
    example_main = hcl2.loads((TERRAFORM_TREE / "examples" / example.name / "main.tf").read_text())
    local_values = {k: v for block in example_main["locals"] for k, v in block.items()}
    calls = example.plan.data["configuration"]["root_module"]["module_calls"]
    if example.name == "multi-region":
        assert local_values["control_plane_addresses"] == {
            n: f"${{module.{n}.control_plane_public_ip}}" for n in example.topology.names
        }
        modules = [calls[n]["module"] for n in example.topology.names]
    else:
        assert local_values["control_plane_address"] == "${module.region.control_plane_public_ip}"
        modules = [calls["region"]["module"]]
    for m in modules:
        assert "aws_eip.control_plane.public_ip" in _expression_refs(
            m, "output", "control_plane_public_ip", ""
        )
        assoc = "aws_eip_association.control_plane"
        assert "aws_eip.control_plane.id" in _expression_refs(m, "resource", assoc, "allocation_id")
        assert "aws_instance.control_plane.id" in _expression_refs(
            m, "resource", assoc, "instance_id"
        )


def test_the_real_wiring_plans_without_a_cycle(tf: Terraform, initialized: set[str]) -> None:
    """Without the override of the Elastic IPs, the topology (an input of every region
    module) takes the control planes' and edges' Elastic IPs from those modules' outputs:
    Terraform plans it (no cycle), leaving what depends on them to apply time."""
    where = "examples/multi-region"
    _init_once(tf, initialized, where)
    tfvars = _example_tfvars("multi-region", generate_secrets("ops"))
    plan = tf.plan(where, tfvars, _offline_override(("eu", "us", "ap", "dns"), None))
    assert plan.data["output_changes"]["topology"]["after_unknown"] is True
    glue = [r["change"] for r in plan.resources("aws_route53_record", "glue")]
    assert len(glue) == 3
    assert all(g["after_unknown"].get("records") is True for g in glue)


def test_bad_inputs_are_refused(tf: Terraform, initialized: set[str]) -> None:
    """Monitoring open to the world, a GeoIP location that is not s3://BUCKET/KEY.mmdb."""
    where = "examples/single-region"
    _init_once(tf, initialized, where)
    tfvars = _example_tfvars("single-region", generate_secrets("ops"))
    tfvars["operator_cidrs"] = ["0.0.0.0/0"]
    tfvars["geoip_db_s3_uri"] = "s3://edgemesh-test-geoip/GeoLite2-City.tar.gz"
    addresses = {"edge_addresses": ["203.0.113.1", "203.0.113.2"]}
    with pytest.raises(RuntimeError) as refused:
        tf.plan(where, tfvars, _offline_override((None,), addresses))
    message = " ".join(str(refused.value).split())
    assert "never 0.0.0.0/0" in message
    assert "The geoip_db_s3_uri must be null or s3://BUCKET/KEY.mmdb" in message


def test_every_user_data_fits_the_ec2_limit(example: ExamplePlan) -> None:
    # EC2 takes at most 16 KiB of user data before base64; gzip keeps the topology in.
    encoded = [
        r["change"]["after"]["user_data_base64"] for r in example.plan.resources("aws_instance")
    ]
    encoded += [
        r["change"]["after"]["user_data"] for r in example.plan.resources("aws_launch_template")
    ]
    assert encoded
    for value in encoded:
        assert len(base64.b64decode(value)) <= 16 * 1024
