"""`edgemesh dev` as a user runs it: a real subprocess, real servers, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from mesh.process import wait_until
from mesh.topology import dev_topology


def _edgemesh(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mesh.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _pids(state: dict[str, Any]) -> list[int]:
    pids = []
    for r in state["regions"].values():
        pids += [n["pid"] for n in r["nats"]] + [e["pid"] for e in r["edges"]]
        if r["control_plane"]:
            pids.append(r["control_plane"]["pid"])
    return pids


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_dev_runs_a_supercluster_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    proc = _edgemesh(
        "dev", "--port-base", "0", "--state", str(state_file), "--data-dir", str(tmp_path / "d")
    )
    try:
        assert wait_until(state_file.exists, 90, 0.2), proc.stderr and proc.stderr.read()
        state = json.loads(state_file.read_text())
        assert set(state["regions"]) == {"eu", "us", "ap"}
        # NATS speaks TLS only, with the CA dev made: monitoring is https, and the
        # gateways between regions are TLS connections.
        ca = ssl.create_default_context(cafile=state["nats_ca_file"])
        for name, region in state["regions"].items():
            assert region["nats"][0]["client_url"].startswith("tls://127.0.0.1:")
            gw = httpx.get(region["nats"][0]["monitor_url"] + "/gatewayz", verify=ca).json()
            assert set(gw["outbound_gateways"]) == {"eu", "us", "ap"} - {name}
            for out in gw["outbound_gateways"].values():
                assert out["connection"]["tls_version"] == "1.3"
            # every edge can serve (NATS reached, streams made) as soon as dev says it is up
            assert region["edges"], "dev starts one edge per region"
            for edge in region["edges"]:
                assert httpx.get(edge["url"] + "/readyz").status_code == 200
        # Each edge and control plane runs from its role's part of the secrets only.
        for kind, role in (("edge", "edge"), ("control-plane", "control")):
            part = tmp_path / "d" / f"secrets-{role}.json"
            assert set(json.loads(part.read_text())["nats"]) == {role}
            cmdlines = [_cmdline(p) for p in _pids(state)]
            ours = [c for c in cmdlines if kind in c]
            assert ours and all(c[c.index("--secrets") + 1] == str(part) for c in ours)
        # The client commands find the edges and the API key in the state file: publish in
        # eu, then read both messages back in us.
        where = ("--state", str(state_file))
        pub = _edgemesh("pub", "dev:hello", '{"n": 1}', "--count", "2", *where, "--region", "eu")
        out, err = pub.communicate(timeout=60)
        acks = [json.loads(line) for line in out.splitlines()]
        assert pub.returncode == 0 and len(acks) == 2, err
        assert all(a["serial"].startswith("eu:") for a in acks)
        sub = _edgemesh(
            "sub", "dev:hello", "--rewind", "2", "--count", "2", *where, "--region", "us"
        )
        out, err = sub.communicate(timeout=60)
        got = [json.loads(line) for line in out.splitlines()]
        assert sub.returncode == 0, err
        assert [m["serial"] for m in got] == [a["serial"] for a in acks]
        assert [m["data"] for m in got] == [{"n": 1}] * 2 and "connected to us" in err
        # Without --count it runs until Ctrl-C, which ends it quietly.
        sub = _edgemesh("sub", "dev:hello", "--rewind", "2", *where)
        assert sub.stdout is not None
        assert [json.loads(sub.stdout.readline())["data"] for _ in range(2)] == [{"n": 1}] * 2
        sub.send_signal(signal.SIGINT)
        _, err = sub.communicate(timeout=30)
        assert sub.returncode == 130 and "Traceback" not in err, err
        pids = _pids(state)
        assert all(_alive(p) for p in pids)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "region eu" in out and "API key" in out
        assert [p for p in pids if _alive(p)] == []
        assert not state_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dev_with_three_servers_per_region(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    proc = _edgemesh(
        "dev",
        "--port-base",
        "0",
        "--servers-per-region",
        "3",
        "--edges-per-region",
        "0",
        "--no-tls",
        "--state",
        str(state_file),
    )
    try:
        assert wait_until(state_file.exists, 90, 0.2)
        state = json.loads(state_file.read_text())
        assert state["nats_ca_file"] is None  # --no-tls: plain text, plain http
        for region in state["regions"].values():
            assert region["nats"][0]["monitor_url"].startswith("http://")
            assert len(region["nats"]) == 3
            routes = httpx.get(region["nats"][0]["monitor_url"] + "/routez").json()
            assert {r["remote_name"] for r in routes["routes"]} == {
                n["name"] for n in region["nats"][1:]
            }
        pids = _pids(state)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert [p for p in pids if _alive(p)] == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_port_in_use_is_one_clear_line_and_nothing_runs(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        # The first region's first NATS client port is port_base itself.
        proc = _edgemesh("dev", "--port-base", str(taken), "--data-dir", str(tmp_path))
        _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"port {taken} (eu-n1 client_port) on 127.0.0.1 is already in use" in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("nats/*/nats.log"))


def test_missing_binary_is_one_clear_line(tmp_path: Path) -> None:
    env = dict(os.environ, EDGEMESH_NATS_SERVER=str(tmp_path / "no-such-nats-server"))
    proc = _edgemesh("dev", "--port-base", "0", "--data-dir", str(tmp_path), env=env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "cannot run" in err and "no-such-nats-server" in err
    assert len(err.strip().splitlines()) == 1


def test_bad_topology_file_names_the_field(tmp_path: Path) -> None:
    doc = json.loads(dev_topology(30000).to_json())
    doc["regions"][1]["latitude"] = 123
    topo = tmp_path / "t.json"
    topo.write_text(json.dumps(doc))
    proc = _edgemesh("dev", "--topology", str(topo))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "regions.1.latitude" in err and "t.json" in err


@pytest.mark.parametrize("flag", ["--servers-per-region", "--edges-per-region", "--port-base"])
def test_shape_flags_with_a_topology_file_are_refused(tmp_path: Path, flag: str) -> None:
    topo = tmp_path / "t.json"
    topo.write_text(dev_topology(30000).to_json())
    proc = _edgemesh("dev", "--topology", str(topo), flag, "2" if flag != "--port-base" else "0")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert f"edgemesh dev: {flag} shape the built-in topology" in err, err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["dev", "--servers-per-region", "0"],
        ["dev", "--edges-per-region", "-1"],
        ["nats-config"],
    ],
)
def test_bad_arguments_exit_nonzero(argv: list[str]) -> None:
    proc = _edgemesh(*argv)
    proc.communicate(timeout=30)
    assert proc.returncode != 0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["pub", "ch", "not json", "--url", "ws://127.0.0.1:1/v1/connect"], "DATA is not JSON"),
        (["sub", "ch"], "give --state, --url or --route"),
        (["sub", "ch", "--state", "/nonexistent/state.json"], "cannot read the state file"),
        (["pub", "ch", "1", "--url", "ws://127.0.0.1:1/v1/connect", "--key", "nocolon"], "KEY_ID"),
    ],
)
def test_client_commands_refuse_bad_input_in_one_line(argv: list[str], says: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EDGEMESH_KEYS"}
    proc = _edgemesh(*argv, env=env)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2, err
    assert says in err and len(err.strip().splitlines()) == 1, err
