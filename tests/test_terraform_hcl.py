"""Static checks of the Terraform sources (python-hcl2) that `terraform validate` skips:
module conventions, typed and described variables, no provider configuration in
modules, sensitive secrets, no arguments that newer AWS providers removed, and no
world-open port besides the client port and DNS whatever the topology says.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

TREE = Path(__file__).resolve().parents[1] / "terraform"
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
        if name == "secrets":
            assert body.get("sensitive") is True, f"{folder.name}: secrets must be sensitive"


@pytest.mark.parametrize("folder", DIRS, ids=lambda d: str(d.relative_to(TREE)))
def test_every_output_is_described_and_none_is_secret(folder: Path) -> None:
    outputs = [o for f in sorted(folder.glob("*.tf")) for o in _blocks(f, "output")]
    assert outputs
    for name, body in outputs:
        assert _unquote(body.get("description", "")).strip(), f"output {name}: no description"
        assert "var.secrets" not in str(body["value"]), f"output {name} exposes secrets"


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
