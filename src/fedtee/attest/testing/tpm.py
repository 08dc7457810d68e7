"""Test helpers for TPM 2.0: a provisioned swtpm on loopback, and fake AKs and quotes.

:class:`Swtpm` (re-exported from :mod:`fedtee.attest.swtpm`, where the demo finds it too)
provisions a software TPM with its own local EK CA and serves it on loopback.

:class:`FakeTpm` makes structurally perfect quotes with a software key, for negative tests of
the verifier (it is not a TPM: its AK attributes are claimed, not enforced).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from fedtee.attest.evidence import tpm as ev
from fedtee.attest.model import Evidence, TeeType
from fedtee.attest.swtpm import Swtpm, local_ca_root, running_swtpm, swtpm_missing

# --- fakes for negative tests ----------------------------------------------------------

AK_ATTRIBUTES = (
    ev.ATTR_FIXED_TPM
    | ev.ATTR_FIXED_PARENT
    | ev.ATTR_SENSITIVE_DATA_ORIGIN
    | ev.ATTR_USER_WITH_AUTH
    | ev.ATTR_RESTRICTED
    | ev.ATTR_SIGN
)


def _tpm2b(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def tpmt_public_rsa(
    key: rsa.RSAPublicKey, *, attributes: int = AK_ATTRIBUTES, sign_scheme: int = ev.TPM_ALG_RSASSA
) -> bytes:
    n = key.public_numbers().n.to_bytes(key.key_size // 8, "big")
    scheme = sign_scheme.to_bytes(2, "big") + ev.TPM_ALG_SHA256.to_bytes(2, "big")
    return (
        ev.TPM_ALG_RSA.to_bytes(2, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + attributes.to_bytes(4, "big")
        + _tpm2b(b"")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + scheme
        + key.key_size.to_bytes(2, "big")
        + (0).to_bytes(4, "big")
        + _tpm2b(n)
    )


def tpmt_public_ecc(key: ec.EllipticCurvePublicKey, *, attributes: int = AK_ATTRIBUTES) -> bytes:
    curve, size = {
        "secp256r1": (ev.TPM_ECC_NIST_P256, 32),
        "secp384r1": (ev.TPM_ECC_NIST_P384, 48),
    }[key.curve.name]
    nums = key.public_numbers()
    hash_alg = ev.TPM_ALG_SHA256 if size == 32 else ev.TPM_ALG_SHA384
    return (
        ev.TPM_ALG_ECC.to_bytes(2, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + attributes.to_bytes(4, "big")
        + _tpm2b(b"")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + ev.TPM_ALG_ECDSA.to_bytes(2, "big")
        + hash_alg.to_bytes(2, "big")
        + curve.to_bytes(2, "big")
        + ev.TPM_ALG_NULL.to_bytes(2, "big")
        + _tpm2b(nums.x.to_bytes(size, "big"))
        + _tpm2b(nums.y.to_bytes(size, "big"))
    )


def quote_body(
    *,
    extra_data: bytes,
    pcr_values: Sequence[bytes],
    pcrs: Sequence[int],
    clock: int = 1000,
    reset_count: int = 1,
    restart_count: int = 0,
    qualified_signer: bytes = b"\x00\x0b" + bytes(32),
    magic: int = ev.TPM_GENERATED_VALUE,
    st: int = ev.TPM_ST_ATTEST_QUOTE,
) -> bytes:
    """A TPMS_ATTEST quote over one SHA-256 bank."""
    bitmap = bytearray(3)
    for p in pcrs:
        bitmap[p // 8] |= 1 << (p % 8)
    digest = hashlib.sha256(b"".join(pcr_values)).digest()
    return (
        magic.to_bytes(4, "big")
        + st.to_bytes(2, "big")
        + _tpm2b(qualified_signer)
        + _tpm2b(extra_data)
        + clock.to_bytes(8, "big")
        + reset_count.to_bytes(4, "big")
        + restart_count.to_bytes(4, "big")
        + b"\x01"
        + (0x2019102300163636).to_bytes(8, "big")
        + (1).to_bytes(4, "big")
        + ev.TPM_ALG_SHA256.to_bytes(2, "big")
        + b"\x03"
        + bytes(bitmap)
        + _tpm2b(digest)
    )


@dataclass
class FakeEkCa:
    """A vendor-style EK CA: root -> intermediate -> EK certificate, with fixed times."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    issuer_key: ec.EllipticCurvePrivateKey
    issuer: x509.Certificate

    NOT_BEFORE = datetime(2024, 1, 1, tzinfo=UTC)
    NOT_AFTER = datetime(2034, 1, 1, tzinfo=UTC)

    @classmethod
    def generate(cls, name: str = "Fake TPM Manufacturer") -> FakeEkCa:
        root_key = ec.generate_private_key(ec.SECP384R1())
        issuer_key = ec.generate_private_key(ec.SECP384R1())
        root = _cert(
            subject=f"{name} Root", issuer=f"{name} Root", key=root_key.public_key(),
            signer=root_key, ca=True,
        )  # fmt: skip
        issuer = _cert(
            subject=f"{name} EK CA", issuer=f"{name} Root", key=issuer_key.public_key(),
            signer=root_key, ca=True,
        )  # fmt: skip
        return cls(root_key=root_key, root=root, issuer_key=issuer_key, issuer=issuer)

    def ek_cert(
        self,
        ek: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        *,
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        serial: int = 0x1234,
    ) -> x509.Certificate:
        return _cert(
            subject="",
            issuer=self.issuer.subject.rfc4514_string().split("=", 1)[1],
            key=ek,
            signer=self.issuer_key,
            ca=False,
            not_before=not_before or self.NOT_BEFORE,
            not_after=not_after or self.NOT_AFTER,
            serial=serial,
        )

    def chain_pem(self) -> bytes:
        return self.issuer.public_bytes(serialization.Encoding.PEM)

    def crl(self, *, revoked: Sequence[int], next_update: datetime | None = None) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuer.subject)
            .last_update(self.NOT_BEFORE)
            .next_update(next_update or self.NOT_AFTER)
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.NOT_BEFORE)
                .build()
            )
        crl = builder.sign(self.issuer_key, hashes.SHA384())
        return crl.public_bytes(serialization.Encoding.DER)


def _cert(
    *,
    subject: str,
    issuer: str,
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    not_before: datetime = FakeEkCa.NOT_BEFORE,
    not_after: datetime = FakeEkCa.NOT_AFTER,
    serial: int = 1,
) -> x509.Certificate:
    # EK certificates have an empty subject (TCG EK Credential Profile); CAs have a CN.
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)] if subject else [])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subj)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    return builder.sign(signer, hashes.SHA384())


@dataclass
class FakeTpm:
    """Signs quotes with a software AK (RSA-2048 or ECC P-256); only for negative tests."""

    ak_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ak_attributes: int = AK_ATTRIBUTES
    pcr_values: list[bytes] = field(default_factory=lambda: [bytes(32)] * 24)
    ek_key: rsa.RSAPrivateKey | None = None

    @classmethod
    def generate(cls, *, ecc: bool = False) -> FakeTpm:
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
            ec.generate_private_key(ec.SECP256R1())
            if ecc
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        return cls(ak_key=key)

    def ak_public(self) -> bytes:
        pub = self.ak_key.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            return _tpm2b(tpmt_public_rsa(pub, attributes=self.ak_attributes))
        return _tpm2b(tpmt_public_ecc(pub, attributes=self.ak_attributes))

    def sign(self, body: bytes) -> bytes:
        key = self.ak_key
        if isinstance(key, rsa.RSAPrivateKey):
            sig = key.sign(body, padding.PKCS1v15(), hashes.SHA256())
            return (
                ev.TPM_ALG_RSASSA.to_bytes(2, "big")
                + ev.TPM_ALG_SHA256.to_bytes(2, "big")
                + _tpm2b(sig)
            )
        r, s = utils.decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
        return (
            ev.TPM_ALG_ECDSA.to_bytes(2, "big")
            + ev.TPM_ALG_SHA256.to_bytes(2, "big")
            + _tpm2b(r.to_bytes(32, "big"))
            + _tpm2b(s.to_bytes(32, "big"))
        )

    def quote(
        self,
        extra_data: bytes,
        *,
        ek_cert: x509.Certificate | None = None,
        ek_chain: bytes | None = None,
        reset_count: int = 1,
        restart_count: int = 0,
        clock: int = 1000,
    ) -> Evidence:
        pcrs = list(range(24))
        body = quote_body(
            extra_data=extra_data,
            pcr_values=self.pcr_values,
            pcrs=pcrs,
            reset_count=reset_count,
            restart_count=restart_count,
            clock=clock,
        )
        aux = {
            "signature": self.sign(body),
            "pcrs": b"".join(self.pcr_values),
            "ak_public": self.ak_public(),
        }
        if ek_cert is not None:
            aux["ek_cert"] = ek_cert.public_bytes(serialization.Encoding.DER)
        if ek_chain is not None:
            aux["ek_chain"] = ek_chain
        return Evidence(tee=TeeType.TPM, data=body, aux=aux)


FIXED_NOW = datetime(2026, 1, 1, tzinfo=UTC)
ONE_DAY = timedelta(days=1)

__all__ = [
    "AK_ATTRIBUTES",
    "FIXED_NOW",
    "FakeEkCa",
    "FakeTpm",
    "Swtpm",
    "quote_body",
    "local_ca_root",
    "running_swtpm",
    "swtpm_missing",
    "tpmt_public_ecc",
    "tpmt_public_rsa",
]
