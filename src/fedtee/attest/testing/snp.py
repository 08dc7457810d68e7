"""Fake AMD SEV-SNP vendor chain and report signer, for negative tests and demos.

:class:`FakeAmdChain` builds ARK -> ASK -> VCEK with the same shapes AMD uses (RSA keys,
RSA-PSS SHA-384 signatures with 48-byte salt, ECDSA P-384 VCEK carrying the SPL and hwID
extensions, serial number 0 on the VCEK as AMD KDS issues it). RSA keys are 2048-bit rather
than AMD's 4096 so tests stay fast; the verifier does not depend on the size.
:func:`build_report` writes a report in the shared layout and :meth:`FakeAmdChain.sign`
signs one. Nothing here is trusted by default: tests pass ``chain.ark`` as a root.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from fedtee.attest.evidence import snp as snp_format
from fedtee.attest.verify.snp import OID_HWID, OID_PRODUCT_NAME, OID_SPL

_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Micro Devices (fedtee tests)"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _der_tlv(tag: int, body: bytes) -> bytes:
    assert len(body) < 0x80
    return bytes([tag, len(body)]) + body


def _der_uint(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return _der_tlv(0x02, body)


def _ext(oid: str, value: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), value)


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: Any


def _issue(
    *,
    subject: str,
    issuer: _Issued | None,
    public: Any,
    signer: Any,
    not_before: datetime,
    not_after: datetime,
    serial: int,
    extensions: list[x509.UnrecognizedExtension] | None = None,
    ca: bool,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.cert.subject if issuer is not None else _name(subject))
        .public_key(public)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for ext in extensions or []:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signer, hashes.SHA384(), rsa_padding=_PSS)


@dataclass(frozen=True, kw_only=True)
class FakeAmdChain:
    """ARK -> ASK -> VCEK. Build with :meth:`generate`."""

    ark: x509.Certificate
    ask: x509.Certificate
    vcek: x509.Certificate
    ark_key: rsa.RSAPrivateKey
    ask_key: rsa.RSAPrivateKey
    vcek_key: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(
        cls,
        *,
        now: datetime,
        product: str = "Milan",
        chip_id: bytes = bytes(range(64)),
        tcb: dict[str, int] | None = None,
        vcek_not_after: datetime | None = None,
        vcek_not_before: datetime | None = None,
        hwid: bytes | None = None,
        keys: tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey] | None = None,
    ) -> FakeAmdChain:
        """A complete fake chain valid around ``now``; ``tcb`` maps SPL part -> value."""
        ark_key, ask_key = keys or (
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        vcek_key = ec.generate_private_key(ec.SECP384R1())
        start, end = now - timedelta(days=365), now + timedelta(days=365 * 20)
        ark_cert = _issue(
            subject=f"ARK-{product}",
            issuer=None,
            public=ark_key.public_key(),
            signer=ark_key,
            not_before=start,
            not_after=end,
            serial=1,
            ca=True,
        )
        ark = _Issued(ark_cert, ark_key)
        ask_cert = _issue(
            subject=f"SEV-{product}",
            issuer=ark,
            public=ask_key.public_key(),
            signer=ark_key,
            not_before=start,
            not_after=end,
            serial=2,
            ca=True,
        )
        parts = tcb if tcb is not None else {"bootloader": 2, "tee": 0, "snp": 5, "microcode": 68}
        exts = [
            _ext(OID_PRODUCT_NAME, _der_tlv(0x16, f"{product}-B0".encode())),
            _ext(OID_HWID, hwid if hwid is not None else chip_id),
        ]
        exts += [_ext(OID_SPL[p], _der_uint(v)) for p, v in parts.items()]
        vcek = _issue(
            subject="SEV-VCEK",
            issuer=_Issued(ask_cert, ask_key),
            public=vcek_key.public_key(),
            signer=ask_key,
            not_before=vcek_not_before or start,
            not_after=vcek_not_after or now + timedelta(days=365 * 7),
            serial=1,
            extensions=exts,
            ca=False,
        )
        return cls(
            ark=ark_cert,
            ask=ask_cert,
            vcek=vcek,
            ark_key=ark_key,
            ask_key=ask_key,
            vcek_key=vcek_key,
        )

    def der(self, which: str) -> bytes:
        cert: x509.Certificate = getattr(self, which)
        return cert.public_bytes(serialization.Encoding.DER)

    def cert_table(self, *, with_ark: bool = True) -> bytes:
        certs = {"vcek": self.der("vcek"), "ask": self.der("ask")}
        if with_ark:
            certs["ark"] = self.der("ark")
        return snp_format.build_cert_table(certs)

    def sign(self, report: bytes) -> bytes:
        """Sign bytes 0..0x29F of ``report`` with the VCEK; returns the signed report."""
        return sign_report(report, self.vcek_key)


def sign_report(report: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Put an ECDSA P-384 signature (r, s little-endian) over bytes 0..0x29F into ``report``."""
    signed = report[: snp_format.SIGNED_SIZE]
    r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA384())))
    sig = r.to_bytes(72, "little") + s.to_bytes(72, "little")
    tail = report[snp_format.SIGNED_SIZE + len(sig) :]
    return signed + sig + tail


def build_report(
    *,
    version: int = 2,
    guest_svn: int = 1,
    policy: int = 0x30000,  # SMT allowed, reserved bit 17, debug off
    report_data: bytes = bytes(64),
    measurement: bytes = bytes(range(48)),
    host_data: bytes = bytes(32),
    chip_id: bytes = bytes(range(64)),
    reported_tcb: bytes = bytes([2, 0, 0, 0, 0, 0, 5, 68]),
    cpuid: tuple[int, int, int] = (0x19, 0x01, 0x01),
    vmpl: int = 0,
    flags: int = 0,
) -> bytes:
    """An unsigned report (signature zero) in the shared layout, for fake-chain tests."""
    out = bytearray(snp_format.REPORT_SIZE)

    def put(offset: int, value: bytes) -> None:
        out[offset : offset + len(value)] = value

    put(0x000, version.to_bytes(4, "little"))
    put(0x004, guest_svn.to_bytes(4, "little"))
    put(0x008, policy.to_bytes(8, "little"))
    put(0x030, vmpl.to_bytes(4, "little"))
    put(0x034, (1).to_bytes(4, "little"))
    put(0x038, reported_tcb)
    put(0x048, flags.to_bytes(4, "little"))
    put(0x050, report_data)
    put(0x090, measurement)
    put(0x0C0, host_data)
    put(0x180, reported_tcb)
    if version >= 3:
        put(0x188, bytes(cpuid))
    put(0x1A0, chip_id)
    put(0x1E0, reported_tcb)
    put(0x1F0, reported_tcb)
    return bytes(out)


__all__ = ["FakeAmdChain", "build_report", "sign_report"]
