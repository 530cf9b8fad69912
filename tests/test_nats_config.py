import json
import subprocess
from pathlib import Path

import pytest

from mesh.cli import main
from mesh.nats_config import render_nats_config
from mesh.secrets import generate_secrets, load_secrets, write_secrets
from mesh.supercluster import nats_server_binary
from mesh.topology import TopologyError, dev_topology


def test_config_has_auth_routes_and_gateways_to_every_other_region() -> None:
    t = dev_topology(22000, servers_per_region=3)
    s = generate_secrets()
    text = render_nats_config(t, s, "us", 2, "/data/js")
    assert 'server_name: "us-n2"' in text
    assert 'name: "us"' in text
    # routes to all three servers of the region, authenticated
    for peer in t.region("us").nats:
        assert f"route:{s.nats.route}@127.0.0.1:{peer.cluster_port}" in text
    # gateways to the two other regions, and none to itself
    assert '{ name: "eu", urls: [' in text and '{ name: "ap", urls: [' in text
    assert '{ name: "us", urls:' not in text
    assert s.nats.edge in text and s.nats.control in text and s.nats.sys in text
    assert "system_account: SYS" in text


def test_nats_server_accepts_the_rendered_config(tmp_path: Path) -> None:
    t = dev_topology(22000)
    conf = tmp_path / "n.conf"
    conf.write_text(render_nats_config(t, generate_secrets(), "eu", 1, str(tmp_path / "js")))
    r = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True)
    assert r.returncode == 0, r.stderr


def test_unknown_server_number_is_a_clear_error() -> None:
    with pytest.raises(TopologyError, match=r"region 'eu' has servers 1..1, not 2"):
        render_nats_config(dev_topology(), generate_secrets(), "eu", 2, "/x")


def test_cli_prints_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topo = tmp_path / "t.json"
    topo.write_text(dev_topology(23000).to_json())
    sec = tmp_path / "s.json"
    secrets = generate_secrets()
    write_secrets(secrets, sec)
    rc = main(["nats-config", "--topology", str(topo), "--region", "ap", "--secrets", str(sec)])
    assert rc == 0
    out = capsys.readouterr().out
    assert out == render_nats_config(
        dev_topology(23000), secrets, "ap", 1, "/var/lib/edgemesh/nats/ap-1"
    )


def test_cli_unknown_region_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topo = tmp_path / "t.json"
    topo.write_text(dev_topology(23000).to_json())
    sec = tmp_path / "s.json"
    write_secrets(generate_secrets(), sec)
    argv = ["nats-config", "--topology", str(topo), "--region", "mars", "--secrets", str(sec)]
    assert main(argv) == 2
    assert "unknown region 'mars'" in capsys.readouterr().err


def test_secrets_command_writes_loadable_secrets_once(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    assert main(["secrets", "--key-id", "ops", "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    loaded = load_secrets(out)
    assert loaded.api_keys[0].startswith("ops:")
    # never overwrites an existing secrets file
    assert main(["secrets", "--out", str(out)]) == 2
    assert load_secrets(out) == loaded


def test_secrets_command_tfvars_shape(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["secrets", "--tfvars"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"secrets"} and set(doc["secrets"]) == {"nats", "api_keys"}
