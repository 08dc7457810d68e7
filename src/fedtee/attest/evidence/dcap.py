"""Intel DCAP ECDSA quotes (SGX quote v3, SGX/TDX quote v4, quote v5): parse only.

Bytes in, frozen records out; no signature checks, no I/O. Every structure is described by
ONE layout table (field name, size, kind) and read through a bounded cursor, so a
truncated, extended or inconsistent quote is an :class:`~fedtee.errors.EvidenceFormatError`
with a precise reason and never an ``IndexError`` / ``struct.error``. All integers in a
quote are little-endian.

Layouts (Intel SGX ECDSA Quote Library API, "Quote Format"; Intel TDX DCAP Quoting Library
API, appendix "Quote Format" for v4 and v5)::

    v3  header(48) | SGX report body(384)                     | u32 sig_len | sig data v3
    v4  header(48) | SGX body(384) or TD 1.0 body(584)        | u32 sig_len | sig data v4
    v5  header(48) | u16 body_type | u32 body_size | body     | u32 sig_len | sig data v4

    sig data v3: signature(64) | attestation key(64) | QE report(384) | QE report sig(64)
                 | u16 auth_len | QE auth data | certification data (type 5)
    sig data v4: signature(64) | attestation key(64) | certification data (type 6 = QE report
                 certification data: QE report(384) | QE sig(64) | u16 auth_len | auth data |
                 certification data (type 5))
    certification data: u16 type | u32 size | data

The quote signature covers ``header || body`` (v5: including the body descriptor), that is
every byte before ``sig_len`` (:attr:`Quote.signed_bytes`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any, Final

from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason

# --- layout tables ---------------------------------------------------------------------
# (field, size in bytes, kind); kind "u" is a little-endian unsigned integer, "b" raw bytes.

Layout = tuple[tuple[str, int, str], ...]

HEADER: Final[Layout] = (
    ("version", 2, "u"),
    ("att_key_type", 2, "u"),
    ("tee_type", 4, "u"),  # v3: reserved (zero); v4/v5: 0x00 SGX, 0x81 TDX
    ("qe_svn", 2, "u"),  # v4/v5: reserved
    ("pce_svn", 2, "u"),  # v4/v5: reserved
    ("qe_vendor_id", 16, "b"),
    ("user_data", 20, "b"),
)

SGX_REPORT_BODY: Final[Layout] = (
    ("cpusvn", 16, "b"),
    ("miscselect", 4, "u"),
    ("reserved1", 12, "b"),
    ("isv_ext_prod_id", 16, "b"),
    ("attributes", 16, "b"),
    ("mrenclave", 32, "b"),
    ("reserved2", 32, "b"),
    ("mrsigner", 32, "b"),
    ("reserved3", 32, "b"),
    ("config_id", 64, "b"),
    ("isv_prod_id", 2, "u"),
    ("isv_svn", 2, "u"),
    ("config_svn", 2, "u"),
    ("reserved4", 42, "b"),
    ("isv_family_id", 16, "b"),
    ("report_data", 64, "b"),
)

TD10_REPORT_BODY: Final[Layout] = (
    ("tee_tcb_svn", 16, "b"),
    ("mrseam", 48, "b"),
    ("mrsignerseam", 48, "b"),
    ("seam_attributes", 8, "b"),
    ("td_attributes", 8, "b"),
    ("xfam", 8, "b"),
    ("mrtd", 48, "b"),
    ("mrconfigid", 48, "b"),
    ("mrowner", 48, "b"),
    ("mrownerconfig", 48, "b"),
    ("rtmr0", 48, "b"),
    ("rtmr1", 48, "b"),
    ("rtmr2", 48, "b"),
    ("rtmr3", 48, "b"),
    ("report_data", 64, "b"),
)

# TDX 1.5 appends two fields to the TDX 1.0 body.
TD15_REPORT_BODY: Final[Layout] = (
    *TD10_REPORT_BODY,
    ("tee_tcb_svn2", 16, "b"),
    ("mrservicetd", 48, "b"),
)

BODY_DESCRIPTOR: Final[Layout] = (("body_type", 2, "u"), ("body_size", 4, "u"))

SIG_DATA_FIXED: Final[Layout] = (("signature", 64, "b"), ("attestation_key", 64, "b"))

QE_REPORT_SIG: Final[Layout] = (("qe_report", 384, "b"), ("qe_report_signature", 64, "b"))

CERT_DATA_HEADER: Final[Layout] = (("cert_type", 2, "u"), ("cert_size", 4, "u"))


def layout_size(layout: Layout) -> int:
    return sum(size for _, size, _ in layout)


HEADER_SIZE: Final = layout_size(HEADER)  # 48
SGX_BODY_SIZE: Final = layout_size(SGX_REPORT_BODY)  # 384
TD10_BODY_SIZE: Final = layout_size(TD10_REPORT_BODY)  # 584
TD15_BODY_SIZE: Final = layout_size(TD15_REPORT_BODY)  # 648

ATT_KEY_TYPE_ECDSA_P256: Final = 2
TEE_TYPE_SGX: Final = 0x00000000
TEE_TYPE_TDX: Final = 0x00000081
SUPPORTED_VERSIONS: Final = (3, 4, 5)

# Intel's QE vendor id; any other vendor's QE is not something Intel collateral speaks for.
INTEL_QE_VENDOR_ID: Final = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

# SGX ATTRIBUTES.FLAGS bit 1: the enclave was launched in debug mode.
SGX_FLAGS_DEBUG: Final = 0x02
# TDX TD_ATTRIBUTES bit 0 (TUD.DEBUG): the TD is debuggable by the host.
TD_ATTRIBUTES_DEBUG: Final = 0x01

MAX_QE_AUTH_DATA: Final = 4096
MAX_CERT_DATA: Final = 32 * 1024


class BodyType(IntEnum):
    """Quote v5 body types."""

    SGX = 1
    TD10 = 2
    TD15 = 3


class CertDataType(IntEnum):
    PPID_CLEARTEXT = 1
    PPID_RSA2048 = 2
    PPID_RSA3072 = 3
    PCK_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERT_DATA = 6
    PLATFORM_MANIFEST = 7


_BODY_LAYOUTS: Final[dict[BodyType, Layout]] = {
    BodyType.SGX: SGX_REPORT_BODY,
    BodyType.TD10: TD10_REPORT_BODY,
    BodyType.TD15: TD15_REPORT_BODY,
}


@cache
def _compiled(layout: Layout) -> struct.Struct:
    """One struct per layout table (the table stays the single source of offsets)."""
    ints = {2: "H", 4: "I", 8: "Q"}
    return struct.Struct("<" + "".join(ints[n] if k == "u" else f"{n}s" for _, n, k in layout))


@cache
def _names(layout: Layout) -> tuple[str, ...]:
    return tuple(name for name, _, _ in layout)


def _fail(message: str, reason: Reason = Reason.EVIDENCE_MALFORMED) -> EvidenceFormatError:
    return EvidenceFormatError(message, reason=reason)


class _Reader:
    """A little-endian cursor that never reads past the end of its buffer."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    def take(self, n: int, field: str) -> bytes:
        end = self._pos + n
        if n < 0 or end > len(self._data):
            raise _fail(
                f"{self._what}: {field} needs {n} bytes at offset {self._pos}, "
                f"only {len(self._data) - self._pos} left",
                Reason.EVIDENCE_TRUNCATED,
            )
        out = self._data[self._pos : end]
        self._pos = end
        return out

    def layout(self, layout: Layout) -> dict[str, Any]:
        compiled = _compiled(layout)
        if self._pos + compiled.size <= len(self._data):
            values = compiled.unpack_from(self._data, self._pos)
            self._pos += compiled.size
            return dict(zip(_names(layout), values, strict=True))
        # Too short: read field by field so the error names the field that is cut off.
        out: dict[str, Any] = {}
        for name, size, kind in layout:
            raw = self.take(size, name)
            out[name] = int.from_bytes(raw, "little") if kind == "u" else raw
        return out

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "little")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "little")

    def end(self) -> None:
        if self._pos != len(self._data):
            raise _fail(
                f"{self._what}: {len(self._data) - self._pos} bytes after the structure",
                Reason.EVIDENCE_TRAILING_DATA,
            )


# --- records ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class QuoteHeader:
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes


@dataclass(frozen=True, kw_only=True)
class SgxReportBody:
    """An SGX enclave REPORT body (also the QE's own report inside the signature data)."""

    cpusvn: bytes
    miscselect: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mrenclave: bytes
    mrsigner: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes

    @property
    def debug(self) -> bool:
        return bool(self.attributes[0] & SGX_FLAGS_DEBUG)


@dataclass(frozen=True, kw_only=True)
class TdReportBody:
    """A TD report body, TDX 1.0 (``tee_tcb_svn2``/``mrservicetd`` None) or TDX 1.5."""

    tee_tcb_svn: bytes
    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mrtd: bytes
    mrconfigid: bytes
    mrowner: bytes
    mrownerconfig: bytes
    rtmr0: bytes
    rtmr1: bytes
    rtmr2: bytes
    rtmr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mrservicetd: bytes | None = None

    @property
    def debug(self) -> bool:
        return bool(self.td_attributes[0] & TD_ATTRIBUTES_DEBUG)

    @property
    def rtmrs(self) -> tuple[bytes, bytes, bytes, bytes]:
        return (self.rtmr0, self.rtmr1, self.rtmr2, self.rtmr3)


@dataclass(frozen=True, kw_only=True)
class QeCertificationData:
    """What the QE signs and certifies: its report, signed by the PCK key, and the chain."""

    qe_report_bytes: bytes
    qe_report: SgxReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes


@dataclass(frozen=True, kw_only=True)
class Quote:
    version: int
    header: QuoteHeader
    body_type: BodyType
    body: SgxReportBody | TdReportBody
    signed_bytes: bytes
    signature: bytes  # r || s, 32 bytes each
    attestation_key: bytes  # x || y, P-256
    certification: QeCertificationData

    @property
    def is_tdx(self) -> bool:
        return self.body_type in (BodyType.TD10, BodyType.TD15)


def _sgx_body(raw: dict[str, Any]) -> SgxReportBody:
    return SgxReportBody(
        **{k: v for k, v in raw.items() if not k.startswith("reserved")},
    )


def parse_sgx_report(data: bytes) -> SgxReportBody:
    r = _Reader(data, "SGX report")
    body = _sgx_body(r.layout(SGX_REPORT_BODY))
    r.end()
    return body


def _td_body(raw: dict[str, Any]) -> TdReportBody:
    return TdReportBody(**raw)


def _cert_data(r: _Reader, what: str) -> tuple[int, bytes]:
    head = r.layout(CERT_DATA_HEADER)
    size = head["cert_size"]
    if size > MAX_CERT_DATA:
        raise _fail(
            f"{what}: certification data declares {size} bytes; at most {MAX_CERT_DATA}",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    return head["cert_type"], r.take(size, f"{what} certification data")


def _pck_chain(cert_type: int, data: bytes, what: str) -> bytes:
    if cert_type != CertDataType.PCK_CERT_CHAIN:
        raise _fail(
            f"{what}: certification data type {cert_type}; fedtee needs type 5 "
            "(PCK certificate chain, PEM) embedded in the quote",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    # Intel's QE pads the PEM with NUL bytes in some versions; the PEM itself is ASCII.
    pem = data.rstrip(b"\x00")
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise _fail(f"{what}: PCK chain is not PEM", Reason.EVIDENCE_FIELD_INVALID)
    return pem


def _qe_section(r: _Reader, what: str) -> tuple[bytes, bytes, bytes]:
    fixed = r.layout(QE_REPORT_SIG)
    auth_len = r.u16("qe_auth_data_size")
    if auth_len > MAX_QE_AUTH_DATA:
        raise _fail(
            f"{what}: QE auth data declares {auth_len} bytes; at most {MAX_QE_AUTH_DATA}",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    auth = r.take(auth_len, "qe_auth_data")
    return fixed["qe_report"], fixed["qe_report_signature"], auth


def _certification(qe_report: bytes, sig: bytes, auth: bytes, chain: bytes) -> QeCertificationData:
    return QeCertificationData(
        qe_report_bytes=qe_report,
        qe_report=parse_sgx_report(qe_report),
        qe_report_signature=sig,
        qe_auth_data=auth,
        pck_chain_pem=chain,
    )


def _parse_sig_data_v3(data: bytes) -> tuple[bytes, bytes, QeCertificationData]:
    r = _Reader(data, "quote v3 signature data")
    fixed = r.layout(SIG_DATA_FIXED)
    qe_report, qe_sig, auth = _qe_section(r, "quote v3")
    cert_type, cert = _cert_data(r, "quote v3")
    r.end()
    chain = _pck_chain(cert_type, cert, "quote v3")
    return (
        fixed["signature"],
        fixed["attestation_key"],
        _certification(qe_report, qe_sig, auth, chain),
    )


def _parse_sig_data_v4(data: bytes, what: str) -> tuple[bytes, bytes, QeCertificationData]:
    r = _Reader(data, f"{what} signature data")
    fixed = r.layout(SIG_DATA_FIXED)
    outer_type, outer = _cert_data(r, what)
    r.end()
    if outer_type != CertDataType.QE_REPORT_CERT_DATA:
        raise _fail(
            f"{what}: outer certification data type {outer_type}; expected 6 "
            "(QE report certification data)",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    inner = _Reader(outer, f"{what} QE report certification data")
    qe_report, qe_sig, auth = _qe_section(inner, what)
    cert_type, cert = _cert_data(inner, f"{what} inner")
    inner.end()
    chain = _pck_chain(cert_type, cert, what)
    return (
        fixed["signature"],
        fixed["attestation_key"],
        _certification(qe_report, qe_sig, auth, chain),
    )


def parse_quote(data: bytes) -> Quote:
    """Parse a DCAP ECDSA quote v3, v4 or v5 (SGX or TDX). Raises only EvidenceFormatError."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise _fail(f"quote is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    r = _Reader(data, "quote")
    head = QuoteHeader(**r.layout(HEADER))
    if head.version not in SUPPORTED_VERSIONS:
        raise _fail(
            f"quote version {head.version}; supported: 3, 4, 5",
            Reason.EVIDENCE_VERSION_UNSUPPORTED,
        )
    if head.att_key_type != ATT_KEY_TYPE_ECDSA_P256:
        raise _fail(
            f"attestation key type {head.att_key_type}; only 2 (ECDSA P-256) is supported",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    if head.version == 3:
        if head.tee_type != TEE_TYPE_SGX:
            raise _fail("quote v3 carries a non-zero TEE type", Reason.EVIDENCE_FIELD_INVALID)
        body_type = BodyType.SGX
    elif head.tee_type == TEE_TYPE_SGX:
        body_type = BodyType.SGX
    elif head.tee_type == TEE_TYPE_TDX:
        body_type = BodyType.TD10
    else:
        raise _fail(f"unknown TEE type 0x{head.tee_type:x}", Reason.EVIDENCE_FIELD_INVALID)

    if head.version == 5:
        desc = r.layout(BODY_DESCRIPTOR)
        try:
            body_type = BodyType(desc["body_type"])
        except ValueError:
            raise _fail(
                f"quote v5 body type {desc['body_type']}; known: 1, 2, 3",
                Reason.EVIDENCE_FIELD_INVALID,
            ) from None
        tee_matches = (body_type is BodyType.SGX) == (head.tee_type == TEE_TYPE_SGX)
        if not tee_matches:
            raise _fail(
                "quote v5 body type does not match the header's TEE type",
                Reason.EVIDENCE_FIELD_INVALID,
            )
        expected = layout_size(_BODY_LAYOUTS[body_type])
        if desc["body_size"] != expected:
            raise _fail(
                f"quote v5 body size {desc['body_size']}; body type {body_type.value} "
                f"is {expected} bytes",
                Reason.EVIDENCE_FIELD_INVALID,
            )
    raw_body = r.layout(_BODY_LAYOUTS[body_type])
    body: SgxReportBody | TdReportBody = (
        _sgx_body(raw_body) if body_type is BodyType.SGX else _td_body(raw_body)
    )
    signed_end = r.pos
    sig_len = r.u32("signature_data_size")
    sig_data = r.take(sig_len, "signature data")
    r.end()
    if head.version == 3:
        signature, att_key, cert = _parse_sig_data_v3(sig_data)
    else:
        signature, att_key, cert = _parse_sig_data_v4(sig_data, f"quote v{head.version}")
    return Quote(
        version=head.version,
        header=head,
        body_type=body_type,
        body=body,
        signed_bytes=data[:signed_end],
        signature=signature,
        attestation_key=att_key,
        certification=cert,
    )


# --- shared helpers for describe / evidence_from_files ---------------------------------


def _hexify(value: Any) -> Any:
    return value.hex() if isinstance(value, bytes) else value


def describe_quote(quote: Quote) -> dict[str, Any]:
    """A JSON-friendly view of a quote: header, body and QE report, bytes as hex."""
    body = {k: _hexify(v) for k, v in vars(quote.body).items() if v is not None}
    qe = quote.certification.qe_report
    return {
        "version": quote.version,
        "tee_type": "tdx" if quote.is_tdx else "sgx",
        "body_type": quote.body_type.name.lower(),
        "header": {k: _hexify(v) for k, v in vars(quote.header).items()},
        "body": body,
        "debug": quote.body.debug,
        "attestation_key": quote.attestation_key.hex(),
        "qe_report": {
            "mrenclave": qe.mrenclave.hex(),
            "mrsigner": qe.mrsigner.hex(),
            "isv_prod_id": qe.isv_prod_id,
            "isv_svn": qe.isv_svn,
            "report_data": qe.report_data.hex(),
        },
        "qe_auth_data": quote.certification.qe_auth_data.hex(),
        "pck_chain_certificates": quote.certification.pck_chain_pem.count(
            b"-----BEGIN CERTIFICATE-----"
        ),
    }


def check_no_aux(aux: Mapping[str, bytes], tee: TeeType) -> None:
    """DCAP quotes carry their PCK chain inside; fedtee accepts no auxiliary blobs."""
    if aux:
        raise _fail(
            f"{tee.value} evidence takes no auxiliary items; got {sorted(aux)}",
            Reason.EVIDENCE_FIELD_INVALID,
        )


def quote_for(evidence: Evidence, tee: TeeType) -> Quote:
    """Parse ``evidence`` and check that its quote really is of type ``tee``."""
    check_no_aux(evidence.aux, tee)
    quote = parse_quote(evidence.data)
    if quote.is_tdx != (tee is TeeType.TDX):
        found = "TDX" if quote.is_tdx else "SGX"
        raise _fail(
            f"evidence labelled {tee.value} holds an {found} quote", Reason.EVIDENCE_FIELD_INVALID
        )
    return quote


__all__ = [
    "BODY_DESCRIPTOR",
    "CERT_DATA_HEADER",
    "HEADER",
    "INTEL_QE_VENDOR_ID",
    "QE_REPORT_SIG",
    "SGX_REPORT_BODY",
    "SIG_DATA_FIXED",
    "TD10_REPORT_BODY",
    "TD15_REPORT_BODY",
    "BodyType",
    "CertDataType",
    "QeCertificationData",
    "Quote",
    "QuoteHeader",
    "SgxReportBody",
    "TdReportBody",
    "check_no_aux",
    "describe_quote",
    "layout_size",
    "parse_quote",
    "parse_sgx_report",
    "quote_for",
]
