"""AMD SEV-SNP evidence: the 1184-byte attestation report and the certificate table.

``Evidence(tee="sev-snp", data=<report>, aux=...)`` where ``aux`` may hold:

- ``"certs"``: the SNP certificate table that ``SNP_GET_EXT_REPORT`` / configfs-tsm
  ``auxblob`` return (GUID-indexed VCEK / VLEK / ASK / ARK, DER);
- ``"vcek"``: the VCEK (or VLEK) certificate alone, DER.

Any other aux name is rejected. Without either, the verifier looks the VCEK up in
collateral (see :mod:`fedtee.attest.verify.snp`).

Layout: SEV Secure Nested Paging Firmware ABI Specification (AMD pub. 56860), table
"ATTESTATION_REPORT Structure". Versions 2 (Milan/Genoa firmware before 1.55), 3 (adds
CPUID family/model/stepping), 4 and 5 (v5 adds the launch/current mitigation vectors) all
share one 1184-byte layout; bytes 0x000..0x29F are signed, the ECDSA P-384 signature (r and s
little-endian, 72 bytes each) follows at 0x2A0.

TCB_VERSION (64 bits, little-endian byte positions) differs by product:

- Milan, Genoa: byte 0 bootloader, 1 tee, 2..5 reserved, 6 snp, 7 microcode;
- Turin: byte 0 fmc, 1 bootloader, 2 tee, 3 snp, 4..6 reserved, 7 microcode.

The product is known from the report's CPUID fields (version >= 3) or, for a version 2
report, from the VCEK's productName extension; Turin firmware only emits version >= 3
reports, so a version 2 report is decoded with the Milan/Genoa layout.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason

REPORT_SIZE: Final = 0x4A0
SIGNED_SIZE: Final = 0x2A0  # the signature covers bytes 0x000..0x29F
MIN_VERSION: Final = 2
MAX_VERSION: Final = 5
SIGNATURE_ALGO_ECDSA_P384_SHA384: Final = 1
AUX_NAMES: Final = frozenset({"certs", "vcek"})


@dataclass(frozen=True)
class _Field:
    offset: int
    size: int
    kind: str  # "u8" | "u32" | "u64" | "bytes"


# One table for the whole report (offsets from AMD pub. 56860, ATTESTATION_REPORT).
_LAYOUT: Final[Mapping[str, _Field]] = {
    "version": _Field(0x000, 4, "u32"),
    "guest_svn": _Field(0x004, 4, "u32"),
    "policy": _Field(0x008, 8, "u64"),
    "family_id": _Field(0x010, 16, "bytes"),
    "image_id": _Field(0x020, 16, "bytes"),
    "vmpl": _Field(0x030, 4, "u32"),
    "signature_algo": _Field(0x034, 4, "u32"),
    "current_tcb": _Field(0x038, 8, "bytes"),
    "platform_info": _Field(0x040, 8, "u64"),
    "flags": _Field(0x048, 4, "u32"),
    "report_data": _Field(0x050, 64, "bytes"),
    "measurement": _Field(0x090, 48, "bytes"),
    "host_data": _Field(0x0C0, 32, "bytes"),
    "id_key_digest": _Field(0x0E0, 48, "bytes"),
    "author_key_digest": _Field(0x110, 48, "bytes"),
    "report_id": _Field(0x140, 32, "bytes"),
    "report_id_ma": _Field(0x160, 32, "bytes"),
    "reported_tcb": _Field(0x180, 8, "bytes"),
    "cpuid_fam_id": _Field(0x188, 1, "u8"),
    "cpuid_mod_id": _Field(0x189, 1, "u8"),
    "cpuid_step": _Field(0x18A, 1, "u8"),
    "chip_id": _Field(0x1A0, 64, "bytes"),
    "committed_tcb": _Field(0x1E0, 8, "bytes"),
    "current_build": _Field(0x1E8, 1, "u8"),
    "current_minor": _Field(0x1E9, 1, "u8"),
    "current_major": _Field(0x1EA, 1, "u8"),
    "committed_build": _Field(0x1EC, 1, "u8"),
    "committed_minor": _Field(0x1ED, 1, "u8"),
    "committed_major": _Field(0x1EE, 1, "u8"),
    "launch_tcb": _Field(0x1F0, 8, "bytes"),
    "launch_mit_vector": _Field(0x1F8, 8, "u64"),
    "current_mit_vector": _Field(0x200, 8, "u64"),
    "signature_r": _Field(0x2A0, 72, "bytes"),
    "signature_s": _Field(0x2E8, 72, "bytes"),
}

# Reserved ranges (start, end exclusive) that must be zero, by the first version that
# gave part of a range a meaning. A non-zero reserved byte means a layout we do not know.
_RESERVED_ALL: Final = (
    (0x04C, 0x050),
    (0x18B, 0x1A0),
    (0x1EB, 0x1EC),
    (0x1EF, 0x1F0),
    (0x208, 0x2A0),
    (0x330, 0x4A0),
)
_RESERVED_BEFORE_V3: Final = ((0x188, 0x18B),)  # CPUID fields appeared in version 3
_RESERVED_BEFORE_V5: Final = ((0x1F8, 0x208),)  # mitigation vectors appeared in version 5

# FLAGS (0x048): bit 0 AUTHOR_KEY_EN, bit 1 MASK_CHIP_ID, bits 2..4 SIGNING_KEY.
_FLAG_AUTHOR_KEY_EN: Final = 1 << 0
_FLAG_MASK_CHIP_ID: Final = 1 << 1
_FLAG_SIGNING_KEY_SHIFT: Final = 2
_FLAG_KNOWN: Final = 0b11111

# Guest POLICY bits (AMD pub. 56860, "Guest Policy Structure").
_POLICY_BITS: Final[Mapping[str, int]] = {
    "smt": 16,
    "reserved_one": 17,  # must be 1
    "migrate_ma": 18,
    "debug": 19,
    "single_socket": 20,
    "cxl_allow": 21,
    "mem_aes_256_xts": 22,
    "rapl_dis": 23,
    "ciphertext_hiding": 24,
    "page_swap_disable": 25,
}
_POLICY_KNOWN_MASK: Final = (1 << 26) - 1

# PLATFORM_INFO bits.
_PLATFORM_INFO_BITS: Final[Mapping[str, int]] = {
    "smt_enabled": 0,
    "tsme_enabled": 1,
    "ecc_enabled": 2,
    "rapl_disabled": 3,
    "ciphertext_hiding_enabled": 4,
    "alias_check_complete": 5,
}


class SigningKey(StrEnum):
    VCEK = "vcek"
    VLEK = "vlek"
    NONE = "none"


_SIGNING_KEYS: Final[Mapping[int, SigningKey]] = {
    0: SigningKey.VCEK,
    1: SigningKey.VLEK,
    7: SigningKey.NONE,
}


class Product(StrEnum):
    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


def product_from_cpuid(family: int, model: int) -> Product | None:
    """Product line from the report's CPUID fields (AMD family 19h/1Ah model ranges)."""
    if family == 0x19 and model <= 0x0F:
        return Product.MILAN
    if family == 0x19 and (0x10 <= model <= 0x1F or 0xA0 <= model <= 0xAF):
        return Product.GENOA
    if family == 0x1A and model <= 0x1F:
        return Product.TURIN
    return None


def product_from_name(name: str) -> Product | None:
    """Product line from a VCEK productName such as ``Milan-B0``."""
    head = name.split("-", 1)[0]
    for product in Product:
        if head == product.value:
            return product
    return None


@dataclass(frozen=True, kw_only=True)
class TcbVersion:
    """A decoded TCB_VERSION. ``fmc`` is None for products without it (before Turin)."""

    raw: bytes
    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def svns(self) -> dict[str, int]:
        out = {
            "tcb.bootloader": self.bootloader,
            "tcb.tee": self.tee,
            "tcb.snp": self.snp,
            "tcb.microcode": self.microcode,
        }
        if self.fmc is not None:
            out["tcb.fmc"] = self.fmc
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "raw": self.raw.hex(),
            **{k.removeprefix("tcb."): v for k, v in self.svns().items()},
        }


def decode_tcb(raw: bytes, product: Product | None) -> TcbVersion:
    """Decode 8 TCB_VERSION bytes with the layout of ``product`` (see module docstring)."""
    if len(raw) != 8:
        raise EvidenceFormatError(
            f"TCB_VERSION is {len(raw)} bytes, expected 8", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    if product is Product.TURIN:
        return TcbVersion(
            raw=raw, fmc=raw[0], bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7]
        )
    return TcbVersion(raw=raw, bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])


@dataclass(frozen=True, kw_only=True)
class GuestPolicy:
    raw: int
    abi_minor: int
    abi_major: int
    smt: bool
    migrate_ma: bool
    debug: bool
    single_socket: bool
    cxl_allow: bool
    mem_aes_256_xts: bool
    rapl_dis: bool
    ciphertext_hiding: bool
    page_swap_disable: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "raw": f"0x{self.raw:016x}",
            "abi": f"{self.abi_major}.{self.abi_minor}",
            "smt": self.smt,
            "migrate_ma": self.migrate_ma,
            "debug": self.debug,
            "single_socket": self.single_socket,
            "cxl_allow": self.cxl_allow,
            "mem_aes_256_xts": self.mem_aes_256_xts,
            "rapl_dis": self.rapl_dis,
            "ciphertext_hiding": self.ciphertext_hiding,
            "page_swap_disable": self.page_swap_disable,
        }


def _bit(value: int, bit: int) -> bool:
    return bool((value >> bit) & 1)


def _policy(raw: int) -> GuestPolicy:
    if raw & ~_POLICY_KNOWN_MASK:
        raise EvidenceFormatError(
            f"guest policy 0x{raw:016x} sets bits above 25, which no SNP ABI defines",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    if not _bit(raw, _POLICY_BITS["reserved_one"]):
        raise EvidenceFormatError(
            f"guest policy 0x{raw:016x} has bit 17 clear; the ABI requires it set",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    names = {k: _bit(raw, b) for k, b in _POLICY_BITS.items() if k != "reserved_one"}
    return GuestPolicy(raw=raw, abi_minor=raw & 0xFF, abi_major=(raw >> 8) & 0xFF, **names)


@dataclass(frozen=True, kw_only=True)
class SnpReport:
    """A parsed attestation report; ``raw`` keeps the exact bytes for the signature check."""

    raw: bytes
    version: int
    guest_svn: int
    policy: GuestPolicy
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    platform_info: int
    author_key_en: bool
    mask_chip_id: bool
    signing_key: SigningKey
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    cpuid: tuple[int, int, int] | None  # family, model, stepping (version >= 3)
    chip_id: bytes
    current_tcb_raw: bytes
    reported_tcb_raw: bytes
    committed_tcb_raw: bytes
    launch_tcb_raw: bytes
    current_version: tuple[int, int, int]  # major, minor, build
    committed_version: tuple[int, int, int]
    launch_mit_vector: int | None
    current_mit_vector: int | None
    signature_r: bytes  # little-endian, as in the report
    signature_s: bytes

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_SIZE]

    @property
    def product(self) -> Product | None:
        if self.cpuid is None:
            return None
        return product_from_cpuid(self.cpuid[0], self.cpuid[1])

    def tcb(self, name: str, product: Product | None = None) -> TcbVersion:
        """Decode one of ``current``, ``reported``, ``committed``, ``launch``."""
        raw = {
            "current": self.current_tcb_raw,
            "reported": self.reported_tcb_raw,
            "committed": self.committed_tcb_raw,
            "launch": self.launch_tcb_raw,
        }[name]
        return decode_tcb(raw, product if product is not None else self.product)

    def platform_info_flags(self) -> dict[str, bool]:
        return {k: _bit(self.platform_info, b) for k, b in _PLATFORM_INFO_BITS.items()}


def _read(data: bytes, name: str) -> Any:
    f = _LAYOUT[name]
    chunk = data[f.offset : f.offset + f.size]
    if f.kind == "bytes":
        return bytes(chunk)
    return int.from_bytes(chunk, "little")


def parse_report(data: bytes) -> SnpReport:
    """Parse an attestation report; raises only :class:`EvidenceFormatError`."""
    if len(data) < REPORT_SIZE:
        raise EvidenceFormatError(
            f"SNP report is {len(data)} bytes, expected {REPORT_SIZE}",
            reason=Reason.EVIDENCE_TRUNCATED,
        )
    if len(data) > REPORT_SIZE:
        raise EvidenceFormatError(
            f"SNP report is {len(data)} bytes; {len(data) - REPORT_SIZE} bytes follow the "
            f"{REPORT_SIZE}-byte report",
            reason=Reason.EVIDENCE_TRAILING_DATA,
        )
    version = _read(data, "version")
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise EvidenceFormatError(
            f"SNP report version {version}; supported: {MIN_VERSION}..{MAX_VERSION}",
            reason=Reason.EVIDENCE_VERSION_UNSUPPORTED,
        )
    reserved = list(_RESERVED_ALL)
    if version < 3:
        reserved += _RESERVED_BEFORE_V3
    if version < 5:
        reserved += _RESERVED_BEFORE_V5
    for start, end in reserved:
        if any(data[start:end]):
            raise EvidenceFormatError(
                f"reserved bytes 0x{start:03x}..0x{end - 1:03x} of a version {version} SNP "
                "report are not zero",
                reason=Reason.EVIDENCE_FIELD_INVALID,
            )
    algo = _read(data, "signature_algo")
    if algo != SIGNATURE_ALGO_ECDSA_P384_SHA384:
        raise EvidenceFormatError(
            f"signature_algo {algo}; only 1 (ECDSA P-384 with SHA-384) is defined",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    flags = _read(data, "flags")
    if flags & ~_FLAG_KNOWN:
        raise EvidenceFormatError(
            f"report flags 0x{flags:08x} set reserved bits", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    key_sel = (flags >> _FLAG_SIGNING_KEY_SHIFT) & 0b111
    signing_key = _SIGNING_KEYS.get(key_sel)
    if signing_key is None:
        raise EvidenceFormatError(
            f"report signing_key selector {key_sel} is reserved",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    vmpl = _read(data, "vmpl")
    if vmpl > 3:
        raise EvidenceFormatError(
            f"VMPL {vmpl}; must be 0..3", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    cpuid = (
        (_read(data, "cpuid_fam_id"), _read(data, "cpuid_mod_id"), _read(data, "cpuid_step"))
        if version >= 3
        else None
    )
    return SnpReport(
        raw=bytes(data),
        version=version,
        guest_svn=_read(data, "guest_svn"),
        policy=_policy(_read(data, "policy")),
        family_id=_read(data, "family_id"),
        image_id=_read(data, "image_id"),
        vmpl=vmpl,
        signature_algo=algo,
        platform_info=_read(data, "platform_info"),
        author_key_en=bool(flags & _FLAG_AUTHOR_KEY_EN),
        mask_chip_id=bool(flags & _FLAG_MASK_CHIP_ID),
        signing_key=signing_key,
        report_data=_read(data, "report_data"),
        measurement=_read(data, "measurement"),
        host_data=_read(data, "host_data"),
        id_key_digest=_read(data, "id_key_digest"),
        author_key_digest=_read(data, "author_key_digest"),
        report_id=_read(data, "report_id"),
        report_id_ma=_read(data, "report_id_ma"),
        cpuid=cpuid,
        chip_id=_read(data, "chip_id"),
        current_tcb_raw=_read(data, "current_tcb"),
        reported_tcb_raw=_read(data, "reported_tcb"),
        committed_tcb_raw=_read(data, "committed_tcb"),
        launch_tcb_raw=_read(data, "launch_tcb"),
        current_version=(
            _read(data, "current_major"),
            _read(data, "current_minor"),
            _read(data, "current_build"),
        ),
        committed_version=(
            _read(data, "committed_major"),
            _read(data, "committed_minor"),
            _read(data, "committed_build"),
        ),
        launch_mit_vector=_read(data, "launch_mit_vector") if version >= 5 else None,
        current_mit_vector=_read(data, "current_mit_vector") if version >= 5 else None,
        signature_r=_read(data, "signature_r"),
        signature_s=_read(data, "signature_s"),
    )


# --- certificate table ----------------------------------------------------------------------
# GHCB spec (AMD pub. 56421) "SNP Extended Guest Request": an array of 24-byte entries
# (GUID, offset u32, length u32; offsets from the table's start) ended by an all-zero entry.
# GUIDs are stored in RFC 4122 byte order, as go-sev-guest and virtee/sev write them.
CERT_GUIDS: Final[Mapping[str, uuid.UUID]] = {
    "vcek": uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd"),
    "vlek": uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1"),
    "ask": uuid.UUID("4ab7b379-bbac-4fe4-a02f-05aef327c782"),
    "ark": uuid.UUID("c0b406a4-a803-4952-9743-3fb6014cd0ae"),
}
_GUID_NAMES: Final[Mapping[bytes, str]] = {g.bytes: n for n, g in CERT_GUIDS.items()}
_ENTRY_SIZE: Final = 24
MAX_CERT_ENTRIES: Final = 16
MAX_CERT_BYTES: Final = 16 * 1024


@dataclass(frozen=True, kw_only=True)
class CertTable:
    """Certificates by name (``vcek``, ``vlek``, ``ask``, ``ark``, or the GUID of others)."""

    entries: Mapping[str, bytes]

    def get(self, name: str) -> bytes | None:
        return self.entries.get(name)


def parse_cert_table(data: bytes) -> CertTable:
    """Parse a certificate table; raises only :class:`EvidenceFormatError`."""
    spans: dict[str, tuple[int, int]] = {}
    pos = 0
    while True:
        if len(spans) > MAX_CERT_ENTRIES:
            raise EvidenceFormatError(
                f"certificate table has more than {MAX_CERT_ENTRIES} entries",
                reason=Reason.EVIDENCE_TOO_LARGE,
            )
        if pos + _ENTRY_SIZE > len(data):
            raise EvidenceFormatError(
                "certificate table ends before its all-zero terminator entry",
                reason=Reason.EVIDENCE_TRUNCATED,
            )
        entry = data[pos : pos + _ENTRY_SIZE]
        pos += _ENTRY_SIZE
        if not any(entry):
            break
        guid = bytes(entry[:16])
        name = _GUID_NAMES.get(guid, str(uuid.UUID(bytes=guid)))
        if name in spans:
            raise EvidenceFormatError(
                f"certificate table lists {name} twice", reason=Reason.EVIDENCE_MALFORMED
            )
        spans[name] = (
            int.from_bytes(entry[16:20], "little"),
            int.from_bytes(entry[20:24], "little"),
        )
    entries: dict[str, bytes] = {}
    for name, (offset, length) in spans.items():
        if length == 0 or length > MAX_CERT_BYTES:
            raise EvidenceFormatError(
                f"certificate table entry {name} has length {length}; must be 1..{MAX_CERT_BYTES}",
                reason=Reason.EVIDENCE_FIELD_INVALID,
            )
        # Certificates live after the entry array (pos is now just past the terminator).
        if offset < pos:
            raise EvidenceFormatError(
                f"certificate table entry {name} points into the entry array",
                reason=Reason.EVIDENCE_MALFORMED,
            )
        if offset + length > len(data):
            raise EvidenceFormatError(
                f"certificate table entry {name} spans {offset}..{offset + length} past the "
                f"table's {len(data)} bytes",
                reason=Reason.EVIDENCE_TRUNCATED,
            )
        entries[name] = bytes(data[offset : offset + length])
    return CertTable(entries=entries)


def build_cert_table(certs: Mapping[str, bytes]) -> bytes:
    """Encode ``{"vcek"|"vlek"|"ask"|"ark": der}`` as a certificate table (for tests, tools)."""
    names = list(certs)
    header = _ENTRY_SIZE * (len(names) + 1)
    out = bytearray()
    body = bytearray()
    for name in names:
        out += CERT_GUIDS[name].bytes
        out += (header + len(body)).to_bytes(4, "little")
        out += len(certs[name]).to_bytes(4, "little")
        body += certs[name]
    out += bytes(_ENTRY_SIZE)
    return bytes(out + body)


# --- Evidence-level helpers -----------------------------------------------------------------


def report_for(evidence: Evidence) -> SnpReport:
    """The report of SEV-SNP evidence, with aux names checked."""
    if evidence.tee is not TeeType.SEV_SNP:
        raise EvidenceFormatError(
            f"evidence is {evidence.tee.value}, not sev-snp", reason=Reason.EVIDENCE_TYPE_UNKNOWN
        )
    unknown = sorted(set(evidence.aux) - AUX_NAMES)
    if unknown:
        raise EvidenceFormatError(
            f"unknown aux items {unknown} for sev-snp evidence; known: {sorted(AUX_NAMES)}",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    return parse_report(evidence.data)


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """A raw report (configfs-tsm ``outblob``) plus optional ``certs`` / ``vcek`` -> Evidence."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise EvidenceFormatError(f"report is {len(data)} bytes", reason=Reason.EVIDENCE_TOO_LARGE)
    evidence = Evidence(tee=TeeType.SEV_SNP, data=data, aux=dict(aux))
    report_for(evidence)
    if "certs" in evidence.aux:
        parse_cert_table(evidence.aux["certs"])
    return evidence


def describe_report(report: SnpReport, product: Product | None = None) -> dict[str, Any]:
    """JSON-friendly claims of a report (bytes as lower-case hex)."""
    prod = product if product is not None else report.product
    return {
        "version": report.version,
        "product": prod.value if prod is not None else None,
        "guest_svn": report.guest_svn,
        "policy": report.policy.to_json(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "vmpl": report.vmpl,
        "signature_algo": report.signature_algo,
        "platform_info": {"raw": f"0x{report.platform_info:x}", **report.platform_info_flags()},
        "author_key_en": report.author_key_en,
        "mask_chip_id": report.mask_chip_id,
        "signing_key": report.signing_key.value,
        "report_data": report.report_data.hex(),
        "measurement": report.measurement.hex(),
        "host_data": report.host_data.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "cpuid": list(report.cpuid) if report.cpuid is not None else None,
        "chip_id": report.chip_id.hex(),
        "current_tcb": report.tcb("current", prod).to_json(),
        "reported_tcb": report.tcb("reported", prod).to_json(),
        "committed_tcb": report.tcb("committed", prod).to_json(),
        "launch_tcb": report.tcb("launch", prod).to_json(),
        "current_version": ".".join(str(v) for v in report.current_version),
        "committed_version": ".".join(str(v) for v in report.committed_version),
        "launch_mit_vector": report.launch_mit_vector,
        "current_mit_vector": report.current_mit_vector,
    }


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of SEV-SNP evidence for ``fedtee attest show``."""
    report = report_for(evidence)
    out: dict[str, Any] = {"tee": TeeType.SEV_SNP.value, **describe_report(report)}
    if "certs" in evidence.aux:
        table = parse_cert_table(evidence.aux["certs"])
        out["certs"] = {name: len(der) for name, der in table.entries.items()}
    if "vcek" in evidence.aux:
        out["vcek_bytes"] = len(evidence.aux["vcek"])
    return out


__all__ = [
    "CERT_GUIDS",
    "REPORT_SIZE",
    "SIGNED_SIZE",
    "CertTable",
    "GuestPolicy",
    "Product",
    "SigningKey",
    "SnpReport",
    "TcbVersion",
    "build_cert_table",
    "decode_tcb",
    "describe",
    "describe_report",
    "evidence_from_files",
    "parse_cert_table",
    "parse_report",
    "product_from_cpuid",
    "product_from_name",
    "report_for",
]
