import json
from pathlib import Path

import pytest

from mesh.topology import TopologyError, dev_topology, load_topology, parse_topology


def _doc() -> dict:
    return json.loads(dev_topology(20000).to_json())


def test_default_dev_topology_has_three_regions_with_coordinates() -> None:
    t = dev_topology()
    assert [(r.name, r.latitude, r.longitude) for r in t.regions] == [
        ("eu", 50.11, 8.68),
        ("us", 39.04, -77.49),
        ("ap", 1.35, 103.82),
    ]
    assert t.region("eu").stream == "EM_eu"


def test_round_trip_through_json() -> None:
    t = dev_topology(21000, servers_per_region=3, edges_per_region=2)
    assert parse_topology(json.loads(t.to_json())) == t


def _error(doc: dict) -> str:
    with pytest.raises(TopologyError) as exc:
        parse_topology(doc)
    return str(exc.value)


def test_duplicate_region_is_named() -> None:
    doc = _doc()
    doc["regions"][1]["name"] = "eu"
    assert "regions.1.name: duplicate region 'eu'" in _error(doc)


@pytest.mark.parametrize(("field", "value"), [("latitude", 91), ("longitude", -180.5)])
def test_bad_coordinates_are_named(field: str, value: float) -> None:
    doc = _doc()
    doc["regions"][2][field] = value
    assert f"regions.2.{field}:" in _error(doc)


def test_port_clash_names_both_fields() -> None:
    doc = _doc()
    doc["regions"][1]["nats"][0]["gateway_port"] = doc["regions"][0]["nats"][0]["client_port"]
    msg = _error(doc)
    assert "regions.1.nats.0.gateway_port" in msg
    assert "regions.0.nats.0.client_port" in msg


def test_edge_port_clashing_with_nats_is_refused() -> None:
    doc = _doc()
    port = doc["regions"][0]["nats"][0]["monitor_port"]
    doc["regions"][0]["edges"][0]["url"] = f"http://127.0.0.1:{port}"
    assert "regions.0.edges.0.url: port" in _error(doc)


def test_unknown_field_is_named() -> None:
    doc = _doc()
    doc["regions"][0]["nats"][0]["colour"] = "blue"
    assert "regions.0.nats.0.colour: unknown field" in _error(doc)


def test_missing_and_mistyped_fields() -> None:
    doc = _doc()
    del doc["regions"][0]["latitude"]
    doc["regions"][1]["nats"][0]["client_port"] = "x"
    msg = _error(doc)
    assert "regions.0.latitude: Field required" in msg
    assert "regions.1.nats.0.client_port" in msg


def test_region_names_must_be_subject_and_stream_safe() -> None:
    doc = _doc()
    doc["regions"][0]["name"] = "eu.west"
    assert "regions.0.name" in _error(doc)


def test_unknown_default_region() -> None:
    doc = _doc()
    doc["dns"] = {"zone": "x.test", "default_region": "mars"}
    assert "dns.default_region: unknown region 'mars'" in _error(doc)


def test_load_toml_and_errors_carry_the_file_name(tmp_path: Path) -> None:
    good = tmp_path / "t.toml"
    good.write_text(
        """
[[regions]]
name = "eu"
latitude = 50.11
longitude = 8.68
[[regions.nats]]
name = "eu-1"
client_port = 4222
cluster_port = 6222
gateway_port = 7222
monitor_port = 8222
"""
    )
    assert load_topology(good).names == ("eu",)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TopologyError, match=r"bad\.json: not valid JSON"):
        load_topology(bad)
    with pytest.raises(TopologyError, match="cannot read"):
        load_topology(tmp_path / "missing.json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"regions": []}))
    with pytest.raises(TopologyError, match=r"wrong\.json: regions:"):
        load_topology(wrong)


def test_answer_addresses_default_to_edge_ips() -> None:
    t = dev_topology()
    assert t.region("us").answer_addresses() == ("127.0.0.1",)


def test_dns_public_address_defaults_to_the_dns_host() -> None:
    cp = parse_topology(_doc()).region("eu").control_plane
    assert cp is not None
    assert cp.dns_public_address is None
    assert cp.advertised_dns_host == cp.dns_host == "127.0.0.1"


def test_dns_public_address_is_advertised_and_round_trips() -> None:
    doc = _doc()
    doc["regions"][0]["control_plane"]["dns_host"] = "10.10.0.10"
    doc["regions"][0]["control_plane"]["dns_public_address"] = "2001:DB8::53"
    t = parse_topology(doc)
    cp = t.region("eu").control_plane
    assert cp is not None
    assert (cp.dns_host, cp.advertised_dns_host) == ("10.10.0.10", "2001:db8::53")
    assert parse_topology(json.loads(t.to_json())) == t


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ns.example.com", "is not an IP address"),
        ("198.51.100.300", "is not an IP address"),
        ("0.0.0.0", "unspecified address"),
        ("::", "unspecified address"),
    ],
)
def test_dns_public_address_must_be_a_reachable_ip(value: str, problem: str) -> None:
    doc = _doc()
    doc["regions"][1]["control_plane"]["dns_public_address"] = value
    message = _error(doc)
    assert "regions.1.control_plane.dns_public_address" in message
    assert problem in message
