"""The simulated TEE's report: hardware-shaped evidence from a software key.

NOT HARDWARE-BACKED. It exists so that the whole trust flow (nonce, key binding, code
measurement, platform certificate, policy) runs on any machine; a policy must name ``sim``
with ``allow_simulated = true`` to accept it, and every result marks it.

Layout (little-endian, fixed size :data:`REPORT_SIZE`):

======  ====  ===============  ===================================================
offset  size  field            meaning
======  ====  ===============  ===================================================
0       4     magic            ``b"FTSM"``
4       2     version          1
6       2     flags            bit 0: debug; other bits reserved (must be zero)
8       4     svn              security version of the simulated platform firmware
12      4     reserved         zero
16      8     timestamp_ms     when the report was made (Unix ms)
24      48    measurement      SHA-384 of the measured code (``measure_code``)
72      32    platform_id      SHA-256 of the platform key's DER SubjectPublicKeyInfo
104     64    report_data      the binding of nonce and identity key
168     64    signature        ECDSA P-256 over bytes 0..167, r || s big-endian
======  ====  ===============  ===================================================

Aux: ``"platform_cert"``: the DER platform certificate, issued by a sim root (required).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason

MAGIC = b"FTSM"
VERSION = 1
FLAG_DEBUG = 0x0001
KNOWN_FLAGS = FLAG_DEBUG

# name -> (offset, size)
LAYOUT: Mapping[str, tuple[int, int]] = {
    "magic": (0, 4),
    "version": (4, 2),
    "flags": (6, 2),
    "svn": (8, 4),
    "reserved": (12, 4),
    "timestamp_ms": (16, 8),
    "measurement": (24, 48),
    "platform_id": (72, 32),
    "report_data": (104, 64),
    "signature": (168, 64),
}
SIGNED_SIZE = 168
REPORT_SIZE = 232
AUX_NAMES = frozenset({"platform_cert"})
MAX_CERT_BYTES = 8 * 1024


def _field(data: bytes, name: str) -> bytes:
    offset, size = LAYOUT[name]
    return data[offset : offset + size]


def _u(data: bytes, name: str) -> int:
    raw = _field(data, name)
    fmt = {2: "<H", 4: "<I", 8: "<Q"}[len(raw)]
    value: int = struct.unpack(fmt, raw)[0]
    return value


@dataclass(frozen=True, kw_only=True)
class SimReport:
    version: int
    debug: bool
    svn: int
    timestamp_ms: int
    measurement: bytes
    platform_id: bytes
    report_data: bytes
    signature: bytes
    signed_bytes: bytes


def parse_report(data: bytes) -> SimReport:
    """Parse a sim report; raises :class:`EvidenceFormatError` on anything unexpected."""
    if len(data) < REPORT_SIZE:
        raise EvidenceFormatError(
            f"sim report is {len(data)} bytes; expected {REPORT_SIZE}",
            reason=Reason.EVIDENCE_TRUNCATED,
        )
    if len(data) > REPORT_SIZE:
        raise EvidenceFormatError(
            f"sim report has {len(data) - REPORT_SIZE} bytes after its end",
            reason=Reason.EVIDENCE_TRAILING_DATA,
        )
    if _field(data, "magic") != MAGIC:
        raise EvidenceFormatError(
            f"not a sim report: magic {_field(data, 'magic').hex()} (expected {MAGIC.hex()})",
            reason=Reason.EVIDENCE_MALFORMED,
        )
    version = _u(data, "version")
    if version != VERSION:
        raise EvidenceFormatError(
            f"sim report version {version} is not supported (expected {VERSION})",
            reason=Reason.EVIDENCE_VERSION_UNSUPPORTED,
        )
    flags = _u(data, "flags")
    if flags & ~KNOWN_FLAGS:
        raise EvidenceFormatError(
            f"sim report has reserved flag bits set: {flags:#06x}",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    if _field(data, "reserved") != bytes(4):
        raise EvidenceFormatError(
            "sim report reserved field is not zero", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    return SimReport(
        version=version,
        debug=bool(flags & FLAG_DEBUG),
        svn=_u(data, "svn"),
        timestamp_ms=_u(data, "timestamp_ms"),
        measurement=_field(data, "measurement"),
        platform_id=_field(data, "platform_id"),
        report_data=_field(data, "report_data"),
        signature=_field(data, "signature"),
        signed_bytes=bytes(data[:SIGNED_SIZE]),
    )


def build_body(
    *,
    debug: bool,
    svn: int,
    timestamp_ms: int,
    measurement: bytes,
    platform_id: bytes,
    report_data: bytes,
) -> bytes:
    """The signed part of a report (used by the sim attester; no crypto here)."""
    if len(measurement) != 48 or len(platform_id) != 32 or len(report_data) != 64:
        raise ValueError("measurement, platform_id, report_data must be 48, 32, 64 bytes")
    return (
        MAGIC
        + struct.pack("<HHII", VERSION, FLAG_DEBUG if debug else 0, svn, 0)
        + struct.pack("<Q", timestamp_ms)
        + measurement
        + platform_id
        + report_data
    )


def check_aux(aux: Mapping[str, bytes]) -> bytes:
    """Return the platform certificate DER from ``aux``; reject unknown or missing items."""
    unknown = set(aux) - AUX_NAMES
    if unknown:
        raise EvidenceFormatError(
            f"unknown sim evidence aux items: {sorted(unknown)}; known: {sorted(AUX_NAMES)}",
            reason=Reason.EVIDENCE_MALFORMED,
        )
    cert = aux.get("platform_cert")
    if not cert:
        raise EvidenceFormatError(
            "sim evidence lacks its platform certificate (aux 'platform_cert')",
            reason=Reason.EVIDENCE_MALFORMED,
        )
    if len(cert) > MAX_CERT_BYTES:
        raise EvidenceFormatError(
            f"sim platform certificate is {len(cert)} bytes; the limit is {MAX_CERT_BYTES}",
            reason=Reason.EVIDENCE_TOO_LARGE,
        )
    return cert


def describe(evidence: Evidence) -> dict[str, Any]:
    report = parse_report(evidence.data)
    return {
        "tee": "sim",
        "hardware_backed": False,
        "warning": "SIMULATED TEE: not hardware-backed",
        "version": report.version,
        "debug": report.debug,
        "svn": report.svn,
        "timestamp_ms": report.timestamp_ms,
        "measurement": report.measurement.hex(),
        "platform_id": report.platform_id.hex(),
        "report_data": report.report_data.hex(),
        "signature": report.signature.hex(),
        "aux": sorted(evidence.aux),
    }


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    return Evidence(tee=TeeType.SIM, data=data, aux=dict(aux))


__all__ = [
    "LAYOUT",
    "REPORT_SIZE",
    "SimReport",
    "build_body",
    "check_aux",
    "describe",
    "evidence_from_files",
    "parse_report",
]
