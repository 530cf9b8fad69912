import json
import subprocess
from pathlib import Path

import pytest

from mesh.cli import main
from mesh.nats_config import render_nats_config
from mesh.secrets import ROLES, generate_secrets, load_secrets, write_secrets
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
        assert f"route:{s.password('route')}@127.0.0.1:{peer.cluster_port}" in text
    # gateways to the two other regions, and none to itself
    assert '{ name: "eu", urls: [' in text and '{ name: "ap", urls: [' in text
    assert '{ name: "us", urls:' not in text
    assert all(s.password(u) in text for u in ("edge", "control", "sys"))
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


def test_each_role_gets_only_its_part(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = generate_secrets("ops")
    src = tmp_path / "s.json"
    write_secrets(whole, src)
    parts = {}
    for role in ROLES:
        assert main(["secrets", "--for-role", role, "--from", str(src)]) == 0
        parts[role] = json.loads(capsys.readouterr().out)
    assert parts["edge"] == {"nats": {"edge": whole.nats.edge}, "api_keys": list(whole.api_keys)}
    assert parts["control"] == {
        "nats": {"control": whole.nats.control},
        "api_keys": list(whole.api_keys),
    }
    assert parts["nats"] == {"nats": whole.nats.model_dump(), "api_keys": []}
    # Each part loads, and holds what its role requires.
    for role in ROLES:
        path = tmp_path / f"{role}.json"
        path.write_text(json.dumps(parts[role]))
        load_secrets(path).require(role)
    # A nats-server's config is the same from its part as from the whole file.
    t = dev_topology(22000)
    nats_part = load_secrets(tmp_path / "nats.json")
    assert render_nats_config(t, nats_part, "eu", 1, "/js") == render_nats_config(
        t, whole, "eu", 1, "/js"
    )


def test_a_role_file_does_not_serve_another_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edge's file has no route, gateway, sys or control password: a nats-server config
    or a control plane cannot start from it, with an error that says why."""
    edge_part = generate_secrets().for_role("edge")
    with pytest.raises(TopologyError, match=r"no nats\.control password"):
        render_nats_config(dev_topology(22000), edge_part, "eu", 1, "/js")
    with pytest.raises(TopologyError, match=r"no nats\.edge password"):
        generate_secrets().for_role("control").require("edge")
    topo = tmp_path / "t.json"
    topo.write_text(dev_topology(23000).to_json())
    sec = tmp_path / "edge.json"
    write_secrets(edge_part, sec)
    assert main(["nats-config", "--topology", str(topo), "--region", "eu", "--secrets", str(sec)])
    assert "no nats.control password" in capsys.readouterr().err
    assert main(["control-plane", "--topology", str(topo), "--region", "eu", "--secrets", str(sec)])
    assert "no nats.control password" in capsys.readouterr().err
    assert main(["secrets", "--for-role", "nats", "--from", str(sec)]) == 2
    assert "--for-role" in capsys.readouterr().err
    # --from without --for-role is refused rather than ignored
    assert main(["secrets", "--from", str(sec)]) == 2
    assert "only read with --for-role" in capsys.readouterr().err
