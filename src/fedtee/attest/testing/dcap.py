"""Fake Intel DCAP PKI, collateral and quotes, for negative tests (no real keys needed).

Shipped with the library, like go-sev-guest's ``testing`` package, so users can test their
own policies. Everything here is fake and says so in its names ("Fake Intel ...");
none of it chains to the real Intel SGX Root CA.

- :class:`FakeIntelPki`: root -> PCK Platform CA -> PCK certificates carrying the SGX
  extensions (FMSPC, TCB component SVNs, PCESVN, PPID); a TCB Signing certificate; CRLs;
  signed TCB info and QE identity JSON in Intel's exact format.
- :func:`make_quote`: SGX quote v3 / TDX quote v4 (and v5) signed by a fresh attestation
  key that a fake QE report, signed by the PCK key, binds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from fedtee.attest.evidence import dcap
from fedtee.attest.evidence.dcap import Layout
from fedtee.attest.verify._dcap import root_crl_key

FIXED_NOW: Final = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
FMSPC: Final = bytes.fromhex("00906ed50000")
PCE_ID: Final = bytes(2)
QE_MRSIGNER: Final = hashlib.sha256(b"fake intel qe signer").digest()
# QE ATTRIBUTES as Intel's QE identity lists them (INIT | MODE64BIT, XFRM x87/SSE).
QE_ATTRIBUTES: Final = bytes.fromhex("11000000000000000000000000000000")
_QE_ATTRIBUTES_MASK: Final = "FBFFFFFFFFFFFFFF0000000000000000"
_SGX_EXT: Final = "1.2.840.113741.1.13.1"


# --- DER for the SGX extensions (facts: Intel PCK Certificate and CRL Profile) ----------


def _tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:
        return bytes([tag, n]) + value
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + value


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([arcs[0] * 40 + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _int(value: int, tag: int = 0x02) -> bytes:
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _pair(oid: str, value: bytes) -> bytes:
    return _tlv(0x30, _oid(oid) + value)


def sgx_extension_der(
    *,
    ppid: bytes,
    tcb_components: Sequence[int],
    pcesvn: int,
    cpusvn: bytes,
    fmspc: bytes,
    pce_id: bytes = PCE_ID,
) -> bytes:
    tcb = b"".join(_pair(f"{_SGX_EXT}.2.{i + 1}", _int(c)) for i, c in enumerate(tcb_components))
    tcb += _pair(f"{_SGX_EXT}.2.17", _int(pcesvn)) + _pair(f"{_SGX_EXT}.2.18", _tlv(0x04, cpusvn))
    return _tlv(
        0x30,
        _pair(f"{_SGX_EXT}.1", _tlv(0x04, ppid))
        + _pair(f"{_SGX_EXT}.2", _tlv(0x30, tcb))
        + _pair(f"{_SGX_EXT}.3", _tlv(0x04, pce_id))
        + _pair(f"{_SGX_EXT}.4", _tlv(0x04, fmspc))
        + _pair(f"{_SGX_EXT}.5", _int(0, tag=0x0A)),
    )


# --- certificates ----------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fake Intel"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    *,
    subject: str,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
    extra: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def raw_signature(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class FakePck:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    chain_pem: bytes  # PCK, Platform CA, root: the order a QE embeds


@dataclass(kw_only=True)
class FakeIntelPki:
    """A complete fake Intel DCAP PKI valid around ``now`` (default :data:`FIXED_NOW`)."""

    now: datetime
    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    platform_ca: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    tcb_signing: x509.Certificate
    revoked_pcks: list[int] = field(default_factory=list)
    revoked_cas: list[int] = field(default_factory=list)

    @classmethod
    def generate(
        cls,
        *,
        now: datetime = FIXED_NOW,
        root_name: str = "Fake Intel SGX Root CA",
        tcb_not_after: datetime | None = None,
    ) -> FakeIntelPki:
        start, end = now - timedelta(days=365), now + timedelta(days=3650)
        root_key, ca_key, tcb_key = _key(), _key(), _key()
        root = _cert(
            subject=root_name,
            issuer=_name(root_name),
            key=root_key,
            signer=root_key,
            ca=True,
            not_before=start,
            not_after=end,
        )
        ca = _cert(
            subject="Fake Intel SGX PCK Platform CA",
            issuer=root.subject,
            key=ca_key,
            signer=root_key,
            ca=True,
            not_before=start,
            not_after=end,
        )
        tcb = _cert(
            subject="Fake Intel SGX TCB Signing",
            issuer=root.subject,
            key=tcb_key,
            signer=root_key,
            ca=False,
            not_before=start,
            not_after=tcb_not_after or end,
        )
        return cls(
            now=now,
            root_key=root_key,
            root=root,
            ca_key=ca_key,
            platform_ca=ca,
            tcb_key=tcb_key,
            tcb_signing=tcb,
        )

    def pck(
        self,
        *,
        tcb_components: Sequence[int] = (5,) * 16,
        pcesvn: int = 13,
        fmspc: bytes = FMSPC,
        ppid: bytes = bytes(range(16)),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None,
        leaf_is_ca: bool = False,
    ) -> FakePck:
        ca_key, ca_cert = ca or (self.ca_key, self.platform_ca)
        key = _key()
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier(_SGX_EXT),
            sgx_extension_der(
                ppid=ppid,
                tcb_components=tcb_components,
                pcesvn=pcesvn,
                cpusvn=bytes(16),
                fmspc=fmspc,
            ),
        )
        cert = _cert(
            subject="Fake Intel SGX PCK Certificate",
            issuer=ca_cert.subject,
            key=key,
            signer=ca_key,
            ca=leaf_is_ca,
            not_before=not_before or self.now - timedelta(days=30),
            not_after=not_after or self.now + timedelta(days=365),
            extra=(ext,),
        )
        return FakePck(key=key, cert=cert, chain_pem=_pem(cert, ca_cert, self.root))

    def _crl(
        self,
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        revoked: Sequence[int],
        next_update: datetime | None,
    ) -> bytes:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuer.subject)
            .last_update(self.now - timedelta(days=1))
            .next_update(next_update or self.now + timedelta(days=30))
        )
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(self.now - timedelta(days=1))
                .build()
            )
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def pck_crl(self, *, revoked: Sequence[int] = (), next_update: datetime | None = None) -> bytes:
        return self._crl(self.platform_ca, self.ca_key, revoked, next_update)

    def root_crl(self, *, revoked: Sequence[int] = ()) -> bytes:
        return self._crl(self.root, self.root_key, revoked, None)

    def tcb_signing_chain_pem(self) -> bytes:
        return _pem(self.tcb_signing, self.root)

    def sign_json(
        self, top: str, body: Mapping[str, Any], key: ec.EllipticCurvePrivateKey | None = None
    ) -> bytes:
        """Intel's format: ``{"<top>":<body>,"signature":"<r||s hex>"}`` over body's bytes."""
        raw = json.dumps(body, separators=(",", ":")).encode()
        sig = raw_signature(key or self.tcb_key, raw).hex()
        return b'{"' + top.encode() + b'":' + raw + b',"signature":"' + sig.encode() + b'"}'

    def tcb_info_body(
        self,
        *,
        tdx: bool = False,
        fmspc: bytes = FMSPC,
        levels: Sequence[tuple[Sequence[int], int, str]] = (
            ((5,) * 16, 13, "UpToDate"),
            ((1,) * 16, 1, "OutOfDate"),
        ),
        tdx_components: Sequence[int] = (0,) * 16,
        issue: datetime | None = None,
        next_update: datetime | None = None,
    ) -> dict[str, Any]:
        def level(comps: Sequence[int], pcesvn: int, status: str) -> dict[str, Any]:
            tcb: dict[str, Any] = {
                "sgxtcbcomponents": [{"svn": c} for c in comps],
                "pcesvn": pcesvn,
            }
            if tdx:
                tcb["tdxtcbcomponents"] = [{"svn": c} for c in tdx_components]
            out: dict[str, Any] = {
                "tcb": tcb,
                "tcbDate": "2024-01-01T00:00:00Z",
                "tcbStatus": status,
            }
            if status != "UpToDate":
                out["advisoryIDs"] = ["INTEL-SA-00000"]
            return out

        body: dict[str, Any] = {
            "id": "TDX" if tdx else "SGX",
            "version": 3,
            "issueDate": _iso(issue or self.now - timedelta(days=1)),
            "nextUpdate": _iso(next_update or self.now + timedelta(days=29)),
            "fmspc": fmspc.hex(),
            "pceId": PCE_ID.hex(),
            "tcbType": 0,
            "tcbEvaluationDataNumber": 17,
            "tcbLevels": [level(*spec) for spec in levels],
        }
        if tdx:
            body["tdxModule"] = {
                "mrsigner": "00" * 48,
                "attributes": "00" * 8,
                "attributesMask": "FF" * 8,
            }
        return body

    def qe_identity_body(
        self,
        *,
        tdx: bool = False,
        isvsvn_levels: Sequence[tuple[int, str]] = ((8, "UpToDate"), (6, "OutOfDate")),
    ) -> dict[str, Any]:
        return {
            "id": "TD_QE" if tdx else "QE",
            "version": 2,
            "issueDate": _iso(self.now - timedelta(days=1)),
            "nextUpdate": _iso(self.now + timedelta(days=29)),
            "tcbEvaluationDataNumber": 17,
            "miscselect": "00000000",
            "miscselectMask": "FFFFFFFF",
            "attributes": QE_ATTRIBUTES.hex(),
            "attributesMask": _QE_ATTRIBUTES_MASK,
            "mrsigner": QE_MRSIGNER.hex().upper(),
            "isvprodid": 2 if tdx else 1,
            "tcbLevels": [
                {"tcb": {"isvsvn": svn}, "tcbDate": "2024-01-01T00:00:00Z", "tcbStatus": status}
                for svn, status in isvsvn_levels
            ],
        }

    def collateral(
        self, *, tdx: bool = False, fmspc: bytes = FMSPC, pck_revoked: Sequence[int] = ()
    ) -> dict[tuple[str, str], bytes]:
        """A complete, valid collateral set for quotes from :meth:`pck` platforms."""
        prefix = "tdx" if tdx else "sgx"
        return {
            (f"{prefix}-tcbinfo", fmspc.hex()): self.sign_json(
                "tcbInfo", self.tcb_info_body(tdx=tdx, fmspc=fmspc)
            ),
            (f"{prefix}-qe-identity", "default"): self.sign_json(
                "enclaveIdentity", self.qe_identity_body(tdx=tdx)
            ),
            ("pck-crl", "platform"): self.pck_crl(revoked=pck_revoked),
            ("root-crl", root_crl_key(self.root)): self.root_crl(),
            ("tcb-signing-chain", "intel"): self.tcb_signing_chain_pem(),
        }


# --- quotes ----------------------------------------------------------------------------


def pack(layout: Layout, values: Mapping[str, int | bytes]) -> bytes:
    """Encode ``values`` with a :mod:`fedtee.attest.evidence.dcap` layout (zeros default)."""
    out = bytearray()
    for name, size, kind in layout:
        value = values.get(name, 0 if kind == "u" else bytes(size))
        raw = value.to_bytes(size, "little") if isinstance(value, int) else value
        if len(raw) != size:
            raise ValueError(f"{name}: {len(raw)} bytes, layout says {size}")
        out += raw
    return bytes(out)


def _cert_data(cert_type: int, data: bytes) -> bytes:
    return pack(dcap.CERT_DATA_HEADER, {"cert_type": cert_type, "cert_size": len(data)}) + data


def make_quote(
    pck: FakePck,
    *,
    version: int = 3,
    tdx: bool = False,
    report_data: bytes = bytes(64),
    body: Mapping[str, int | bytes] | None = None,
    qe_svn: int = 8,
    qe_mrsigner: bytes = QE_MRSIGNER,
    td15: bool = False,
) -> bytes:
    """A DCAP quote signed like a real QE would: fresh attestation key, QE report by PCK."""
    att_key = _key()
    numbers = att_key.public_key().public_numbers()
    att_raw = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    auth = bytes(range(32))
    qe_report = pack(
        dcap.SGX_REPORT_BODY,
        {
            "attributes": QE_ATTRIBUTES,
            "mrenclave": hashlib.sha256(b"fake qe").digest(),
            "mrsigner": qe_mrsigner,
            "isv_prod_id": 2 if tdx else 1,
            "isv_svn": qe_svn,
            "report_data": hashlib.sha256(att_raw + auth).digest() + bytes(32),
        },
    )
    qe_sig = raw_signature(pck.key, qe_report)
    header = pack(
        dcap.HEADER,
        {
            "version": version,
            "att_key_type": dcap.ATT_KEY_TYPE_ECDSA_P256,
            "tee_type": dcap.TEE_TYPE_TDX if tdx else dcap.TEE_TYPE_SGX,
            "qe_svn": qe_svn if version == 3 else 0,
            "pce_svn": 13 if version == 3 else 0,
            "qe_vendor_id": dcap.INTEL_QE_VENDOR_ID,
        },
    )
    fields: dict[str, int | bytes] = {"report_data": report_data, **(body or {})}
    if tdx:
        layout = dcap.TD15_REPORT_BODY if td15 else dcap.TD10_REPORT_BODY
        body_type = dcap.BodyType.TD15 if td15 else dcap.BodyType.TD10
    else:
        layout, body_type = dcap.SGX_REPORT_BODY, dcap.BodyType.SGX
    body_bytes = pack(layout, fields)
    if version == 5:
        body_bytes = (
            pack(dcap.BODY_DESCRIPTOR, {"body_type": body_type, "body_size": len(body_bytes)})
            + body_bytes
        )
    signed = header + body_bytes
    signature = raw_signature(att_key, signed)
    chain = _cert_data(dcap.CertDataType.PCK_CERT_CHAIN, pck.chain_pem)
    qe_part = qe_report + qe_sig + len(auth).to_bytes(2, "little") + auth
    if version == 3:
        sig_data = signature + att_raw + qe_part + chain
    else:
        sig_data = (
            signature + att_raw + _cert_data(dcap.CertDataType.QE_REPORT_CERT_DATA, qe_part + chain)
        )
    return signed + len(sig_data).to_bytes(4, "little") + sig_data


__all__ = [
    "FIXED_NOW",
    "FMSPC",
    "QE_MRSIGNER",
    "FakeIntelPki",
    "FakePck",
    "make_quote",
    "pack",
    "raw_signature",
    "sgx_extension_der",
]
