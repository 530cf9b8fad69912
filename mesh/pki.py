"""The deployment's certificates for NATS on one machine: a CA and the servers' certificate.

:func:`issue_local_pki` is the certificate authority of `edgemesh dev`, the tests and
the benchmarks. A cloud deployment brings its own files (Terraform makes them). What
connects to NATS needs only :mod:`mesh.tls`.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.topology import Tls, Topology

LOCAL_VALIDITY = datetime.timedelta(days=30)
# Certificates are valid from a little before they are made: clocks of hosts differ.
CLOCK_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class Pem:
    """A certificate and its private key, PEM-encoded."""

    cert: bytes
    key: bytes


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgemesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(common_name: str, now: datetime.datetime, valid: datetime.timedelta) -> Pem:
    """A self-signed certificate authority that can sign only end-entity certificates."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def subject_alt_names(hosts: list[str]) -> list[x509.GeneralName]:
    """IP addresses as IP names, everything else as DNS names; duplicates dropped. Pure."""
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def issue_server_cert(
    ca: Pem, common_name: str, hosts: list[str], now: datetime.datetime, valid: datetime.timedelta
) -> Pem:
    """A certificate for a nats-server reachable at `hosts`, signed by `ca`.

    It is good for both ends of a connection (server and client auth): a server shows
    it to clients, and to the servers it dials for routes and gateways."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host")
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    ca_key = serialization.load_pem_private_key(ca.key, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + valid, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def topology_hosts(topology: Topology) -> list[str]:
    """Every name the topology's NATS servers are dialled at (their SANs). Pure."""
    hosts: list[str] = []
    for _region, s in topology.servers():
        hosts += [s.host, s.public_host]
    return list(dict.fromkeys(hosts))


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def issue_local_pki(topology: Topology, directory: Path) -> Topology:
    """A fresh CA and one server certificate for every NATS server of `topology` (all on
    this machine, so one certificate naming all their hosts), written to `directory`.
    Returns the topology with ``tls`` pointing at the files."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca = make_ca("edgemesh local CA", now, LOCAL_VALIDITY)
    server = issue_server_cert(ca, "edgemesh nats", topology_hosts(topology), now, LOCAL_VALIDITY)
    tls = Tls(
        ca_file=str((directory / "ca.pem").resolve()),
        cert_file=str((directory / "nats.pem").resolve()),
        key_file=str((directory / "nats-key.pem").resolve()),
    )
    _write(Path(tls.ca_file), ca.cert, 0o644)
    _write(Path(tls.cert_file), server.cert, 0o644)
    _write(Path(tls.key_file), server.key, 0o600)
    # The CA's key is not kept: nothing else is ever signed for this deployment.
    return topology.model_copy(update={"tls": tls})
