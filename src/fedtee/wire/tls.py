"""The federation's TLS material: a CA (ECDSA P-256) and the server certificate it signs.

These functions take and return bytes (PEM); the CLI reads and writes the files. The server
certificate names ``localhost``, ``127.0.0.1`` and any extra host names or IP addresses, so a
client checks the name it dialled against it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedtee.errors import ConfigError

MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True, kw_only=True)
class CertAndKey:
    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return load_cert(self.cert_pem)

    @property
    def key(self) -> ec.EllipticCurvePrivateKey:
        return load_key(self.key_pem)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(*, name: str, now: datetime, days: int = 3650) -> CertAndKey:
    """A new federation CA (self-signed, path length 0: it signs only leaf certificates)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
    return CertAndKey(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in ("localhost", "127.0.0.1", *names):
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_server_cert(
    ca: CertAndKey, *, names: Sequence[str] = (), now: datetime, days: int = 825
) -> CertAndKey:
    """A server certificate signed by ``ca`` for localhost, 127.0.0.1 and ``names``."""
    ca_cert, ca_key = ca.cert, ca.key
    key = ec.generate_private_key(ec.SECP256R1())
    cn = next((n for n in names if n), "localhost")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return CertAndKey(cert_pem=cert.public_bytes(serialization.Encoding.PEM), key_pem=_key_pem(key))


def load_cert(pem: bytes) -> x509.Certificate:
    if len(pem) > MAX_PEM_BYTES:
        raise ConfigError(f"certificate PEM of {len(pem)} bytes exceeds {MAX_PEM_BYTES}")
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate: {exc}") from exc


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    if len(pem) > MAX_PEM_BYTES:
        raise ConfigError(f"key PEM of {len(pem)} bytes exceeds {MAX_PEM_BYTES}")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError("TLS key must be an EC private key")
    return key


def server_public_key_der(cert_pem: bytes) -> bytes:
    """DER SPKI of the server certificate's key (what server evidence would bind)."""
    return (
        load_cert(cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


__all__ = [
    "MAX_PEM_BYTES",
    "CertAndKey",
    "load_cert",
    "load_key",
    "make_ca",
    "make_server_cert",
    "server_public_key_der",
]
