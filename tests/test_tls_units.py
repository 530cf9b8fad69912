"""The deployment's PKI (mesh/tls.py) and the TLS blocks of the rendered NATS config."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from mesh.nats_config import render_nats_config
from mesh.natsconn import tls_options
from mesh.pki import (
    issue_local_pki,
    issue_server_cert,
    make_ca,
    subject_alt_names,
    topology_hosts,
)
from mesh.secrets import generate_secrets
from mesh.supercluster import nats_server_binary
from mesh.tls import client_context
from mesh.topology import Tls, dev_topology, parse_topology

NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)


def test_subject_alt_names_split_ips_from_names_and_drop_repeats() -> None:
    names = subject_alt_names(["127.0.0.1", "nats-1.eu.example.com", "::1", "127.0.0.1"])
    assert names == [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.DNSName("nats-1.eu.example.com"),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


def test_server_cert_is_signed_by_the_ca_for_both_ends_of_a_connection() -> None:
    ca = make_ca("test CA", NOW, 30 * DAY)
    leaf = issue_server_cert(ca, "nats", ["10.0.0.5", "nats-1.eu.example.com"], NOW, 10 * DAY)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    cert = x509.load_pem_x509_certificate(leaf.cert)
    cert.verify_directly_issued_by(ca_cert)  # raises if not
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["nats-1.eu.example.com"]
    assert cert.not_valid_before_utc < NOW < cert.not_valid_after_utc
    assert cert.not_valid_after_utc == NOW + 10 * DAY


def test_server_cert_never_outlives_its_ca() -> None:
    ca = make_ca("short CA", NOW, 2 * DAY)
    leaf = issue_server_cert(ca, "nats", ["127.0.0.1"], NOW, 365 * DAY)
    cert = x509.load_pem_x509_certificate(leaf.cert)
    assert cert.not_valid_after_utc == NOW + 2 * DAY


def test_server_cert_needs_a_host() -> None:
    with pytest.raises(ValueError, match="at least one host"):
        issue_server_cert(make_ca("CA", NOW, DAY), "nats", [], NOW, DAY)


def test_topology_hosts_are_every_address_a_server_is_dialled_at() -> None:
    t = dev_topology(23000).model_dump()
    t["regions"][1]["nats"][0]["advertise_host"] = "nats-1.us.example.com"
    assert topology_hosts(parse_topology(t)) == ["127.0.0.1", "nats-1.us.example.com"]


def test_local_pki_files_and_a_context_that_trusts_them(tmp_path: Path) -> None:
    t = issue_local_pki(dev_topology(23000), tmp_path / "tls")
    assert t.tls is not None
    assert Path(t.tls.key_file).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(Path(t.tls.ca_file).read_bytes())
    leaf = x509.load_pem_x509_certificate(Path(t.tls.cert_file).read_bytes())
    leaf.verify_directly_issued_by(ca)
    # The topology keeps its TLS section through its JSON form (edges and control
    # planes read it from the file `edgemesh dev` writes).
    assert parse_topology(t.model_dump(mode="json")).tls == t.tls
    ctx = client_context(t.tls)
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert client_context(None) is None


def test_without_tls_the_config_is_plain(tmp_path: Path) -> None:
    text = render_nats_config(dev_topology(23000), generate_secrets(), "eu", 1, "/js")
    assert "tls {" not in text and "https:" not in text and "\nhttp: " in text


def test_tls_config_is_mutual_for_routes_and_gateways_and_handshake_first_for_clients(
    tmp_path: Path,
) -> None:
    t = dev_topology(23000, servers_per_region=2).model_copy(
        update={"tls": Tls(ca_file="/etc/em/ca.pem", cert_file="/etc/em/n.pem", key_file="/k")}
    )
    text = render_nats_config(t, generate_secrets(), "eu", 1, "/js")
    top, _, rest = text.partition("cluster {")
    cluster, _, gateway = rest.partition("gateway {")
    for block in (top, cluster, gateway):
        assert block.count("tls {") == 1
        assert 'ca_file: "/etc/em/ca.pem"' in block and 'cert_file: "/etc/em/n.pem"' in block
    assert "handshake_first: true" in top and "verify: true" not in top
    for block in (cluster, gateway):
        assert "verify: true" in block and "handshake_first" not in block
    assert "\nhttps: " in top and "\nhttp: " not in top
    assert t.monitor_url(t.regions[0].nats[0]).startswith("https://")
    assert t.client_url(t.regions[0].nats[0]).startswith("tls://")


def test_nats_server_accepts_the_rendered_tls_config(tmp_path: Path) -> None:
    t = issue_local_pki(dev_topology(23000), tmp_path / "tls")
    conf = tmp_path / "n.conf"
    conf.write_text(render_nats_config(t, generate_secrets(), "us", 1, str(tmp_path / "js")))
    r = subprocess.run([nats_server_binary(), "-t", "-c", str(conf)], capture_output=True)
    assert r.returncode == 0, r.stderr


def test_asyncio_tls_eof_noise_is_dropped_and_nothing_else(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = issue_local_pki(dev_topology(23000), tmp_path / "tls")
    assert tls_options(t)["tls_handshake_first"] is True
    log = logging.getLogger("asyncio")
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        log.warning("returning true from eof_received() has no effect when using ssl")
        log.warning("Fatal error on SSL transport")
    assert [r.getMessage() for r in caplog.records] == ["Fatal error on SSL transport"]
