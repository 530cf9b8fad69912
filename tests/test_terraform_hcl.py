"""Static checks of the Terraform sources (python-hcl2) that `terraform validate` skips:
module conventions, typed and described variables, no provider configuration in
modules, sensitive secrets, each role's secrets parameter reading only its fields of
them, no arguments that newer AWS providers removed, and no world-open port besides the
client port and DNS whatever the topology says.

Also the NATS PKI's tls_* resources (modules/pki/tls.tf), which the offline terraform
runs cannot load (no registry here ships the tls provider, see tests/terraform_offline.py):
one ECDSA P-256 CA, and per server a key and a certificate for server and client auth
naming the server's hosts; no private key reaches an output but the pki module's
sensitive one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from tests.terraform_offline import PKI_STAND_IN

TREE = Path(__file__).resolve().parents[1] / "terraform"
PKI = TREE / "modules" / "pki"
DIRS = sorted(p.parent for p in TREE.glob("*/*/versions.tf"))
WORLD = ('"0.0.0.0/0"', '"::/0"')


def _unquote(v: Any) -> Any:
    """python-hcl2 keeps string literals quoted and expressions as "${...}"."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def _blocks(path: Path, kind: str) -> list[tuple[str, dict[str, Any]]]:
    with path.open() as f:
        doc = hcl2.load(f)
    out = []
    for block in doc.get(kind, []):
        for name, body in block.items():
            out.append((_unquote(name), body))
    return out


def _resources(path: Path) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for type_, named in _blocks(path, "resource"):
        for name, body in named.items():
            out.append((type_, _unquote(name), body))
    return out


def test_every_module_and_example_is_found() -> None:
    assert {str(d.relative_to(TREE)) for d in DIRS} == {
        "modules/cloud-init",
        "modules/region",
        "modules/dns",
        "modules/pki",
        "examples/single-region",
        "examples/multi-region",
    }


@pytest.mark.parametrize("folder", DIRS, ids=lambda d: str(d.relative_to(TREE)))
def test_layout_follows_terraform_aws_modules(folder: Path) -> None:
    for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (folder / name).is_file(), f"{folder.relative_to(TREE)} has no {name}"


@pytest.mark.parametrize("folder", DIRS, ids=lambda d: str(d.relative_to(TREE)))
def test_every_variable_has_a_type_and_a_description(folder: Path) -> None:
    variables = [v for f in sorted(folder.glob("*.tf")) for v in _blocks(f, "variable")]
    assert variables
    for name, body in variables:
        assert body.get("type"), f"variable {name} has no type"
        assert _unquote(body.get("description", "")).strip(), f"variable {name}: no description"
        if name in ("secrets", "nats_tls"):
            assert body.get("sensitive") is True, f"{folder.name}: {name} must be sensitive"


@pytest.mark.parametrize("folder", DIRS, ids=lambda d: str(d.relative_to(TREE)))
def test_every_output_is_described_and_none_is_secret(folder: Path) -> None:
    outputs = [o for f in sorted(folder.glob("*.tf")) for o in _blocks(f, "output")]
    assert outputs
    for name, body in outputs:
        assert _unquote(body.get("description", "")).strip(), f"output {name}: no description"
        assert "var.secrets" not in str(body["value"]), f"output {name} exposes secrets"
        # Private keys: only the pki module's output for the region modules carries them,
        # and it is sensitive; no root output (what `terraform output` prints) does.
        if KEY_MATERIAL.search(str(body["value"])):
            assert folder == PKI and body.get("sensitive") is True, f"output {name} exposes keys"


KEY_MATERIAL = re.compile(r"private_key|key_pem|nats_tls")


def test_modules_never_configure_providers() -> None:
    for f in sorted((TREE / "modules").rglob("*.tf")):
        assert not _blocks(f, "provider"), f"{f.relative_to(TREE)} configures a provider"


# Arguments that one side of the supported range (AWS provider 3.39 up to today's)
# lacks: aws_eip's `vpc` is gone from 6.x and `domain` is not settable in 3.x, the
# autoscaling group's `tags` is gone since 5.x, aws_region's `name` is deprecated in 6.x.
NOT_PORTABLE = {
    "aws_eip": {"vpc", "domain"},
    "aws_autoscaling_group": {"tags"},
    "aws_instance": {"cpu_core_count", "cpu_threads_per_core"},
}


def test_no_arguments_outside_the_supported_provider_range() -> None:
    for f in sorted(TREE.rglob("*.tf")):
        for type_, name, body in _resources(f):
            bad = NOT_PORTABLE.get(type_, set()) & set(body)
            assert not bad, f"{f.relative_to(TREE)}: {type_}.{name} sets {bad}"
        assert "aws_region" not in {t for t, _ in _blocks(f, "data")}, f


def test_security_groups_open_only_the_client_port_and_dns_to_the_world() -> None:
    """Whatever topology comes in, only the edge client port and DNS face the world."""
    region = TREE / "modules" / "region"
    sources = {f.name: f.read_text() for f in region.glob("*.tf")}
    # The world appears in exactly two places: the `anywhere` local and the default route.
    mentions = [
        (name, line.strip())
        for name, text in sources.items()
        for line in text.splitlines()
        if any(w in line for w in WORLD)
    ]
    assert sorted(mentions) == [
        ("network.tf", 'destination_cidr_block = "0.0.0.0/0"'),
        ("security_groups.tf", 'anywhere = ["0.0.0.0/0"]'),
    ]
    local_values = dict(_blocks(region / "security_groups.tf", "locals"))
    rules = re.findall(r"\{([^{}]*)\}", local_values["candidate_rules"])
    assert len(rules) >= 8
    world_rules = [r for r in rules if "local.anywhere" in r]
    ports = sorted(m.group(1) for r in world_rules if (m := re.search(r"port = ([\w.]+)", r)))
    assert ports == ["local.client_port", "local.dns_port", "local.dns_port"]
    # Egress is the only other use of `anywhere`; no security group has inline rules.
    for f in region.glob("*.tf"):
        for type_, name, body in _resources(f):
            if type_ == "aws_security_group":
                assert "ingress" not in body and "egress" not in body, name
            if type_ == "aws_security_group_rule" and "local.anywhere" in str(body):
                assert _unquote(body["type"]) == "egress", name


def test_each_roles_secrets_parameter_reads_only_its_fields() -> None:
    """In the region module only the three per-role SSM parameters read var.secrets
    (besides its validations), each only its role's fields: the edges' the edge password
    and the API keys, the control plane's the control password and the API keys, the
    NATS servers' every password and no API key. The plan's values are checked in
    tests/test_terraform.py."""
    region = TREE / "modules" / "region"
    read = {}
    for f in sorted(region.glob("*.tf")):
        doc = hcl2.loads(f.read_text())
        for kind, blocks in doc.items():
            if kind in ("variable", "__comments__") or "var.secrets" not in str(blocks):
                continue
            assert kind == "resource", f"{f.name}: a {kind} block reads var.secrets"
        for type_, name, body in _resources(f):
            fields = set(re.findall(r"\bvar\.secrets((?:\.[a-z_]+)*)", str(body)))
            if fields:
                read[(type_, name)] = fields
    passwords = {f".nats.{u}" for u in ("edge", "control", "sys", "route", "gateway")}
    assert read == {
        ("aws_ssm_parameter", "secrets_edge"): {".nats.edge", ".api_keys"},
        ("aws_ssm_parameter", "secrets_control_plane"): {".nats.control", ".api_keys"},
        ("aws_ssm_parameter", "secrets_nats"): passwords,
    }
    # Elsewhere the secrets only go, whole, to region modules (the examples' calls).
    secrets = re.compile(r"\bvar\.secrets\b(?!_)")
    for f in sorted(TREE.rglob("*.tf")):
        if f.parent == region:
            continue
        doc = hcl2.loads(f.read_text())
        for kind, blocks in doc.items():
            if kind in ("variable", "__comments__") or not secrets.search(str(blocks)):
                continue
            assert kind == "module", f"{f.relative_to(TREE)}: a {kind} block reads var.secrets"
            for block in blocks:
                for name, body in block.items():
                    if secrets.search(str(body)):
                        assert _unquote(body["source"]) == "../../modules/region", name
                        assert body["secrets"] == "${var.secrets}", name
                        rest = {k: v for k, v in body.items() if k != "secrets"}
                        assert not secrets.search(str(rest)), name


# -- the NATS PKI ------------------------------------------------------------------------

TLS_RESOURCES = ("tls_private_key", "tls_self_signed_cert", "tls_cert_request")


def test_only_the_pki_modules_tls_tf_makes_keys_and_certificates() -> None:
    for f in sorted(TREE.rglob("*.tf")):
        types = {t for t, _, _ in _resources(f) if t.startswith("tls_")}
        assert not types or f == PKI / "tls.tf", f"{f.relative_to(TREE)} has {types}"
        if f.parent == PKI and f.name != "tls.tf":
            # The rest of the module reads tls.tf's locals only: what the stand-in replaces.
            assert not re.search(r"\btls_[a-z_]+\.(ca|nats)\b", f.read_text()), f.name
    [versions] = hcl2.loads((PKI / "versions.tf").read_text())["terraform"]
    [providers] = versions["required_providers"]
    assert _unquote(providers["tls"]["source"]) == "hashicorp/tls"
    assert _unquote(providers["tls"]["version"]) == ">= 4.0"


def test_the_offline_stand_in_defines_what_tls_tf_defines() -> None:
    def names(doc: dict[str, Any]) -> set[str]:
        return {k for block in doc.get("locals", []) for k in block if k != "__is_block__"}

    real = hcl2.loads((PKI / "tls.tf").read_text())
    assert (
        names(real)
        == names(hcl2.loads(PKI_STAND_IN))
        == {
            "ca_cert_pem",
            "server_cert_pems",
            "server_key_pems",
        }
    )
    assert "resource" not in hcl2.loads(PKI_STAND_IN)


def test_one_ca_and_per_nats_server_a_key_and_a_certificate_for_both_ends() -> None:
    res = {(t, n): body for t, n, body in _resources(PKI / "tls.tf")}
    assert set(res) == {
        ("tls_private_key", "ca"),
        ("tls_self_signed_cert", "ca"),
        ("tls_private_key", "nats"),
        ("tls_cert_request", "nats"),
        ("tls_locally_signed_cert", "nats"),
    }
    for name in ("ca", "nats"):
        key = res[("tls_private_key", name)]
        assert (_unquote(key["algorithm"]), _unquote(key["ecdsa_curve"])) == ("ECDSA", "P256")

    ca = res[("tls_self_signed_cert", "ca")]
    assert ca["private_key_pem"] == "${tls_private_key.ca.private_key_pem}"
    assert ca["is_ca_certificate"] is True
    assert [_unquote(u) for u in ca["allowed_uses"]] == ["cert_signing", "crl_signing"]
    assert ca["validity_period_hours"] == "${var.ca_validity_hours}"
    # No early renewal of the CA: replacing it re-issues every certificate at once.
    assert "early_renewal_hours" not in ca

    # One of each per server of the topology, keyed by server name.
    for type_ in ("tls_private_key", "tls_cert_request", "tls_locally_signed_cert"):
        assert res[(type_, "nats")]["for_each"] == "${local.servers}", type_
    request = res[("tls_cert_request", "nats")]
    assert request["private_key_pem"] == "${tls_private_key.nats[each.key].private_key_pem}"
    assert request["dns_names"] == "${each.value.dns_names}"
    assert request["ip_addresses"] == "${each.value.ip_addresses}"
    assert request["subject"][0]["common_name"] == "${each.key}"

    leaf = res[("tls_locally_signed_cert", "nats")]
    assert leaf["cert_request_pem"] == "${tls_cert_request.nats[each.key].cert_request_pem}"
    assert leaf["ca_private_key_pem"] == "${tls_private_key.ca.private_key_pem}"
    assert leaf["ca_cert_pem"] == "${tls_self_signed_cert.ca.cert_pem}"
    # Servers show it to clients (server auth) and to the servers they dial for routes
    # and gateways (client auth: those are mutual TLS).
    assert sorted(_unquote(u) for u in leaf["allowed_uses"]) == [
        "client_auth",
        "digital_signature",
        "key_encipherment",
        "server_auth",
    ]
    assert leaf["validity_period_hours"] == "${var.server_validity_hours}"
    assert leaf["early_renewal_hours"] == "${var.server_early_renewal_hours}"

    variables = dict(_blocks(PKI / "variables.tf", "variable"))
    defaults = {
        n: variables[n]["default"]
        for n in ("ca_validity_hours", "server_validity_hours", "server_early_renewal_hours")
    }
    assert defaults == {
        "ca_validity_hours": 87600,
        "server_validity_hours": 8760,
        "server_early_renewal_hours": 1440,
    }
    # The locals that the rest of the module (and the stand-in) uses.
    [tls_locals] = hcl2.loads((PKI / "tls.tf").read_text())["locals"]
    assert tls_locals["server_key_pems"] == (
        "${{for name, k in tls_private_key.nats : name => k.private_key_pem}}"
    )
    assert tls_locals["server_cert_pems"] == (
        "${{for name, c in tls_locally_signed_cert.nats : name => c.cert_pem}}"
    )


@pytest.mark.parametrize("example", ["single-region", "multi-region"])
def test_examples_turn_tls_on_with_the_pki_modules_files(example: str) -> None:
    main = hcl2.loads((TREE / "examples" / example / "main.tf").read_text())
    modules = {_unquote(k): body for block in main["module"] for k, body in block.items()}
    assert _unquote(modules["pki"]["source"]) == "../../modules/pki"
    regions = {k: b for k, b in modules.items() if _unquote(b["source"]) == "../../modules/region"}
    assert regions
    for name, body in regions.items():
        region = "var.region" if example == "single-region" else f'"{name}"'
        assert body["nats_tls"] == f"${{module.pki.nats_tls[{region}]}}", name
    local_values = {k: v for block in main["locals"] for k, v in block.items()}
    assert local_values["topology"]["tls"] == {
        "ca_file": '"/etc/edgemesh/tls/ca.pem"',
        "cert_file": '"/etc/edgemesh/tls/nats.pem"',
        "key_file": '"/etc/edgemesh/tls/nats-key.pem"',
    }
