"""Where each TEE's evidence carries the report_data it was asked to sign.

The attesters read it back before handing evidence over: a quote that does not echo the
report_data we wrote belongs to some other request (a concurrent writer the generation
counter could not see, a stale cached quote), and sending it would only earn a rejection
later with a less helpful reason. This is a sanity check, not verification: nothing here
is trusted by the verifier, which parses and checks the signed field itself.

Layouts (all little-endian), from Intel's DCAP quote library (SGX v3, TDX v4/v5) and AMD's
SEV-SNP ABI specification (attestation report, table "ATTESTATION_REPORT structure").
"""

from __future__ import annotations

from dataclasses import dataclass

from fedtee.attest.model import TeeType

REPORT_DATA_SIZE = 64
_QUOTE_HEADER_SIZE = 48


@dataclass(frozen=True)
class _Field:
    offset: int
    size: int


# Quote header: version (u16) at 0, attestation key type (u16) at 2, TEE type (u32) at 4.
_QUOTE_VERSION = _Field(0, 2)
_QUOTE_TEE_TYPE = _Field(4, 4)
_TEE_TYPE_SGX = 0x00000000
_TEE_TYPE_TDX = 0x00000081
# v5 inserts a body descriptor, type (u16) and size (u32), between header and body.
_V5_BODY_DESCRIPTOR_SIZE = 6
# SGX report body: report_data is its last 64 bytes, at offset 320 of 384.
_SGX_BODY_REPORT_DATA = 320
# TDX TD report body (TDX 1.0 and 1.5): report_data at offset 520, after TEE_TCB_SVN,
# MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES, TDATTRIBUTES, XFAM, MRTD, MRCONFIGID, MROWNER,
# MROWNERCONFIG and RTMR0..3.
_TDX_BODY_REPORT_DATA = 520
# SNP attestation report: version (u32) at 0x00, REPORT_DATA at 0x50.
_SNP_VERSION = _Field(0x00, 4)
_SNP_REPORT_DATA = _Field(0x50, REPORT_DATA_SIZE)
_SNP_MIN_VERSION = 2


def _u(blob: bytes, f: _Field) -> int:
    return int.from_bytes(blob[f.offset : f.offset + f.size], "little")


def _fits(blob: bytes, offset: int) -> int | None:
    return offset if len(blob) >= offset + REPORT_DATA_SIZE else None


def report_data_offset(tee: TeeType, blob: bytes) -> int | None:
    """Offset of the 64-byte report_data field in ``blob``, or None for an unknown layout.

    Only SGX, TDX and SEV-SNP have fixed binary layouts; CCA and PSA tokens are CBOR and are
    left to the verifier.
    """
    if tee is TeeType.SEV_SNP:
        if len(blob) < _SNP_VERSION.size or _u(blob, _SNP_VERSION) < _SNP_MIN_VERSION:
            return None
        return _fits(blob, _SNP_REPORT_DATA.offset)
    if tee not in (TeeType.SGX, TeeType.TDX) or len(blob) < _QUOTE_HEADER_SIZE:
        return None
    version = _u(blob, _QUOTE_VERSION)
    tee_type = _u(blob, _QUOTE_TEE_TYPE)
    if tee is TeeType.SGX:
        if version not in (3, 4) or tee_type != _TEE_TYPE_SGX:
            return None
        return _fits(blob, _QUOTE_HEADER_SIZE + _SGX_BODY_REPORT_DATA)
    if tee_type != _TEE_TYPE_TDX:
        return None
    if version == 4:
        return _fits(blob, _QUOTE_HEADER_SIZE + _TDX_BODY_REPORT_DATA)
    if version == 5:
        body = _QUOTE_HEADER_SIZE + _V5_BODY_DESCRIPTOR_SIZE
        return _fits(blob, body + _TDX_BODY_REPORT_DATA)
    return None


def echoed_report_data(tee: TeeType, blob: bytes) -> bytes | None:
    """The report_data field of ``blob``, or None when its layout is not one we know."""
    offset = report_data_offset(tee, blob)
    if offset is None:
        return None
    return blob[offset : offset + REPORT_DATA_SIZE]


__all__ = ["REPORT_DATA_SIZE", "echoed_report_data", "report_data_offset"]
