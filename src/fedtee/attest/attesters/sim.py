"""The simulated TEE: software keys standing in for a hardware root of trust.

NOT HARDWARE-BACKED. A :class:`SimRoot` plays the vendor's root CA, a :class:`SimPlatform`
plays one machine (its key certified by the root, like a VCEK or a PCK), and
:class:`SimAttester` signs reports with that platform key. A verifier accepts them only
when it is given the sim root as a trust anchor, and a policy only when it names ``sim``
with ``allow_simulated = true``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from fedtee.attest.evidence.sim import build_body
from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import ConfigError

ROOT_COMMON_NAME = "fedtee SIMULATED TEE root - NOT HARDWARE"
PLATFORM_COMMON_NAME = "fedtee SIMULATED TEE platform - NOT HARDWARE"
_EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedtee simulation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class SimRoot:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def certificate(self) -> x509.Certificate:
        return self.cert

    @classmethod
    def generate(
        cls, *, not_before: dt.datetime = _EPOCH, not_after: dt.datetime = _FAR
    ) -> SimRoot:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(ROOT_COMMON_NAME))
            .issuer_name(_name(ROOT_COMMON_NAME))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
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
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> SimRoot:
        """Load a root written by :meth:`cert_pem` / :meth:`key_pem`; ConfigError if wrong."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
            cert_spki = _spki_of(cert)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(f"sim root PEM is malformed: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError("a sim root key must be an EC private key")
        if _spki(key.public_key()) != cert_spki:
            raise ConfigError("the sim root key does not match the sim root certificate")
        return cls(key=key, cert=cert)

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def _spki_of(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass(frozen=True)
class SimPlatform:
    """One simulated machine: a platform key and its certificate from the sim root."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def platform_id(self) -> bytes:
        return hashlib.sha256(_spki(self.key.public_key())).digest()

    @classmethod
    def generate(
        cls,
        root: SimRoot,
        *,
        not_before: dt.datetime = _EPOCH,
        not_after: dt.datetime = _FAR,
    ) -> SimPlatform:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(PLATFORM_COMMON_NAME))
            .issuer_name(root.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(root.key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)


class SimAttester:
    """Attester protocol for the simulated TEE (report_data is 64 bytes)."""

    tee = TeeType.SIM
    report_data_size = 64

    def __init__(
        self,
        *,
        platform: SimPlatform,
        measurement: bytes,
        debug: bool = False,
        svn: int = 1,
        clock: object | None = None,
    ) -> None:
        if len(measurement) != 48:
            raise ValueError(f"a sim measurement is 48 bytes (SHA-384); got {len(measurement)}")
        self._platform = platform
        self._measurement = measurement
        self._debug = debug
        self._svn = svn
        self._clock = clock

    def _now_ms(self) -> int:
        if callable(self._clock):
            value = self._clock()
            if isinstance(value, dt.datetime):
                return int(value.timestamp() * 1000)
            return int(value)
        return int(dt.datetime.now(dt.UTC).timestamp() * 1000)

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != self.report_data_size:
            raise ValueError(f"sim report_data is 64 bytes; got {len(report_data)}")
        body = build_body(
            debug=self._debug,
            svn=self._svn,
            timestamp_ms=self._now_ms(),
            measurement=self._measurement,
            platform_id=self._platform.platform_id,
            report_data=report_data,
        )
        der = self._platform.key.sign(body, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return Evidence(
            tee=TeeType.SIM,
            data=body + signature,
            aux={"platform_cert": self._platform.cert.public_bytes(serialization.Encoding.DER)},
        )


__all__ = ["ROOT_COMMON_NAME", "SimAttester", "SimPlatform", "SimRoot"]
