"""A throwaway PKI for TLS tests, made with `cryptography`: CAs, server and client certificates.

Nothing here is a stand-in: the certificates are real X.509 (EC P-256, SHA-256) that gRPC's
TLS stack verifies as it would any other. Three CAs, so tests can present a certificate
from the wrong one: the server CA signs the server certificate, the client CA signs client
certificates for mutual TLS, and the other CA signs look-alikes that must be refused.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "Pki", "issue", "make_ca", "write_pki"]

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, both PEM."""

    cert: bytes
    key: bytes


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "promptgate tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    # Backdated a little: clocks of the two ends may differ by a second or so.
    return builder.not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(
        now + datetime.timedelta(days=2)
    )


def make_ca(common_name: str) -> tuple[Issued, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
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
    )
    cert = builder.sign(key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)), cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    server: bool,
) -> Issued:
    """A leaf certificate signed by the CA: a server one (names and IPs of loopback) or a client one."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in SERVER_NAMES]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVER_IPS]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key))


@dataclass(frozen=True)
class Pki:
    """PEM files on disk (the server reads paths) and their bytes (the client takes either)."""

    dir: Path
    server_ca: Issued
    client_ca: Issued
    other_ca: Issued
    server: Issued  # signed by server_ca, for localhost / 127.0.0.1 / ::1
    client: Issued  # signed by client_ca
    other_client: Issued  # signed by other_ca: must be refused by a server trusting client_ca
    other_server: Issued  # signed by other_ca: must be refused by a client trusting server_ca

    def path(self, name: str) -> Path:
        return self.dir / name


def write_pki(directory: Path) -> Pki:
    """Make the three CAs and four leaves, and write each as `<name>.crt` / `<name>.key`."""
    directory.mkdir(parents=True, exist_ok=True)
    server_ca, server_ca_cert, server_ca_key = make_ca("promptgate test server CA")
    client_ca, client_ca_cert, client_ca_key = make_ca("promptgate test client CA")
    other_ca, other_ca_cert, other_ca_key = make_ca("some other CA")
    pki = Pki(
        dir=directory,
        server_ca=server_ca,
        client_ca=client_ca,
        other_ca=other_ca,
        server=issue(server_ca_cert, server_ca_key, "localhost", server=True),
        client=issue(client_ca_cert, client_ca_key, "agent-backend", server=False),
        other_client=issue(other_ca_cert, other_ca_key, "agent-backend", server=False),
        other_server=issue(other_ca_cert, other_ca_key, "localhost", server=True),
    )
    for name in ("server_ca", "client_ca", "other_ca", "server", "client", "other_client", "other_server"):
        issued: Issued = getattr(pki, name)
        (directory / f"{name}.crt").write_bytes(issued.cert)
        key_path = directory / f"{name}.key"
        key_path.write_bytes(issued.key)
        key_path.chmod(0o600)
    return pki
