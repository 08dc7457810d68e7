"""TPM 2.0 evidence: strict big-endian parsers for the structures a quote travels with.

Parse only: bytes in, frozen records out; no signature checks, no I/O. Every read is
bounded by the enclosing buffer and by the TPM's own maximum sizes, and every error is an
:class:`~fedtee.errors.EvidenceFormatError`.

Structures (TPM 2.0 Library, Part 2: Structures):

- ``TPMS_ATTEST`` of type ``TPM_ST_ATTEST_QUOTE`` (the signed quote body),
- ``TPMT_SIGNATURE`` for RSASSA, RSAPSS and ECDSA,
- ``TPM2B_PUBLIC`` / ``TPMT_PUBLIC`` for RSA and ECC keys, and the object's Name
  (``nameAlg || H_nameAlg(TPMT_PUBLIC)``).

fedtee's TPM :class:`~fedtee.attest.model.Evidence`: ``data`` is the TPMS_ATTEST bytes, and
``aux`` holds (names in :data:`AUX_NAMES`, any other name is rejected):

- ``"signature"``: TPMT_SIGNATURE by the attestation key (required),
- ``"pcrs"``: the selected PCR values concatenated in selection order (each bank of the
  quote's TPML_PCR_SELECTION in turn, PCRs ascending), which is exactly the order the TPM
  digests them (required),
- ``"ak_public"``: the AK as TPM2B_PUBLIC (fedtee's attester), or ``"ak_public_der"``: the
  AK as DER SubjectPublicKeyInfo (e.g. the Azure vTPM format); exactly one of them,
- ``"ek_cert"``: the EK certificate (DER), ``"ek_chain"``: PEM intermediates up to a
  trusted EK CA, ``"activated_secret"``: the credential the TPM recovered (optional).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason

# --- constants (TPM 2.0 Part 2) --------------------------------------------------------

TPM_GENERATED_VALUE = 0xFF544347  # "\xffTCG": only the TPM signs bodies starting with this
TPM_ST_ATTEST_QUOTE = 0x8018

TPM_ALG_RSA = 0x0001
TPM_ALG_SHA1 = 0x0004
TPM_ALG_SHA256 = 0x000B
TPM_ALG_SHA384 = 0x000C
TPM_ALG_SHA512 = 0x000D
TPM_ALG_NULL = 0x0010
TPM_ALG_RSASSA = 0x0014
TPM_ALG_RSAPSS = 0x0016
TPM_ALG_ECDSA = 0x0018
TPM_ALG_ECC = 0x0023
TPM_ALG_CFB = 0x0043
TPM_ALG_AES = 0x0006

TPM_ECC_NIST_P256 = 0x0003
TPM_ECC_NIST_P384 = 0x0004
TPM_ECC_NIST_P521 = 0x0005

# hash algorithm id -> (hashlib name, digest size)
HASH_ALGS: Mapping[int, tuple[str, int]] = {
    TPM_ALG_SHA1: ("sha1", 20),
    TPM_ALG_SHA256: ("sha256", 32),
    TPM_ALG_SHA384: ("sha384", 48),
    TPM_ALG_SHA512: ("sha512", 64),
}

CURVES: Mapping[int, tuple[str, int]] = {
    TPM_ECC_NIST_P256: ("P-256", 32),
    TPM_ECC_NIST_P384: ("P-384", 48),
    TPM_ECC_NIST_P521: ("P-521", 66),
}

# TPMA_OBJECT bits (Part 2, 8.3)
ATTR_FIXED_TPM = 1 << 1
ATTR_ST_CLEAR = 1 << 2
ATTR_FIXED_PARENT = 1 << 4
ATTR_SENSITIVE_DATA_ORIGIN = 1 << 5
ATTR_USER_WITH_AUTH = 1 << 6
ATTR_ADMIN_WITH_POLICY = 1 << 7
ATTR_NO_DA = 1 << 10
ATTR_RESTRICTED = 1 << 16
ATTR_DECRYPT = 1 << 17
ATTR_SIGN = 1 << 18

ATTRIBUTE_NAMES: tuple[tuple[int, str], ...] = (
    (ATTR_FIXED_TPM, "fixedTPM"),
    (ATTR_ST_CLEAR, "stClear"),
    (ATTR_FIXED_PARENT, "fixedParent"),
    (ATTR_SENSITIVE_DATA_ORIGIN, "sensitiveDataOrigin"),
    (ATTR_USER_WITH_AUTH, "userWithAuth"),
    (ATTR_ADMIN_WITH_POLICY, "adminWithPolicy"),
    (ATTR_NO_DA, "noDA"),
    (ATTR_RESTRICTED, "restricted"),
    (ATTR_DECRYPT, "decrypt"),
    (ATTR_SIGN, "sign"),
)

# Size bounds, from the reference implementation's limits: the largest digest is 64 bytes
# (SHA-512), names are alg || digest, RSA keys up to 4096 bits, PCR selections 3..4 bytes.
MAX_DIGEST = 64
MAX_NAME = 2 + MAX_DIGEST
MAX_RSA_BYTES = 512
MAX_ECC_COORD = 66
MAX_PCR_SELECT_BYTES = 4
MAX_PCR_BANKS = 8
MAX_SIGNATURE_BYTES = 2 + 2 + 2 + MAX_RSA_BYTES
MAX_PUBLIC_BYTES = 1024

AUX_NAMES = frozenset(
    {"signature", "pcrs", "ak_public", "ak_public_der", "ek_cert", "ek_chain", "activated_secret"}
)

# Fixed-size field groups, as struct formats with their field names (layout tables).
_ATTEST_HEADER = (">IH", ("magic", "type"))
_CLOCK_INFO = (">QIIB", ("clock", "reset_count", "restart_count", "safe"))
_FIRMWARE = (">Q", ("firmware_version",))
_PUBLIC_HEADER = (">HHI", ("type", "name_alg", "attributes"))


def _fail(message: str, reason: Reason = Reason.EVIDENCE_MALFORMED) -> EvidenceFormatError:
    return EvidenceFormatError(message, reason=reason)


class _Reader:
    """A cursor that never reads past the end of its buffer."""

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

    def fields(self, layout: tuple[str, tuple[str, ...]], field: str) -> dict[str, int]:
        fmt, names = layout
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt), field))
        return dict(zip(names, values, strict=True))

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def u32(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def tpm2b(self, field: str, *, max_size: int) -> bytes:
        size = self.u16(f"{field}.size")
        if size > max_size:
            raise _fail(
                f"{self._what}: {field} declares {size} bytes; at most {max_size} allowed",
                Reason.EVIDENCE_FIELD_INVALID,
            )
        return self.take(size, field)

    def end(self) -> None:
        if self._pos != len(self._data):
            raise _fail(
                f"{self._what}: {len(self._data) - self._pos} bytes after the structure",
                Reason.EVIDENCE_TRAILING_DATA,
            )


def _hash_alg(alg: int, field: str) -> tuple[str, int]:
    try:
        return HASH_ALGS[alg]
    except KeyError:
        raise _fail(
            f"{field}: unsupported hash algorithm 0x{alg:04x}", Reason.EVIDENCE_FIELD_INVALID
        ) from None


# --- TPMS_ATTEST ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PcrSelection:
    """One bank of a TPML_PCR_SELECTION: a hash algorithm and the PCRs selected in it."""

    hash_alg: int
    pcrs: tuple[int, ...]

    @property
    def hash_name(self) -> str:
        return HASH_ALGS[self.hash_alg][0]

    @property
    def digest_size(self) -> int:
        return HASH_ALGS[self.hash_alg][1]


@dataclass(frozen=True, kw_only=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True, kw_only=True)
class TpmQuote:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE; ``raw`` is exactly the signed bytes."""

    raw: bytes
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    pcr_selections: tuple[PcrSelection, ...]
    pcr_digest: bytes

    @property
    def pcr_count(self) -> int:
        return sum(len(s.pcrs) for s in self.pcr_selections)

    @property
    def pcr_values_size(self) -> int:
        return sum(len(s.pcrs) * s.digest_size for s in self.pcr_selections)


def _parse_pcr_selections(r: _Reader) -> tuple[PcrSelection, ...]:
    count = r.u32("pcrSelect.count")
    if count > MAX_PCR_BANKS:
        raise _fail(
            f"pcrSelect has {count} banks; at most {MAX_PCR_BANKS}", Reason.EVIDENCE_FIELD_INVALID
        )
    banks: list[PcrSelection] = []
    seen: set[int] = set()
    for i in range(count):
        alg = r.u16(f"pcrSelect[{i}].hash")
        _hash_alg(alg, f"pcrSelect[{i}].hash")
        if alg in seen:
            raise _fail(f"pcrSelect bank 0x{alg:04x} listed twice", Reason.EVIDENCE_FIELD_INVALID)
        seen.add(alg)
        size = r.u8(f"pcrSelect[{i}].sizeofSelect")
        if size > MAX_PCR_SELECT_BYTES:
            raise _fail(
                f"pcrSelect[{i}] bitmap is {size} bytes; at most {MAX_PCR_SELECT_BYTES}",
                Reason.EVIDENCE_FIELD_INVALID,
            )
        bitmap = r.take(size, f"pcrSelect[{i}].pcrSelect")
        # Bit j of byte k selects PCR 8k + j (Part 2, 10.6.1).
        pcrs = tuple(k * 8 + j for k, b in enumerate(bitmap) for j in range(8) if b >> j & 1)
        banks.append(PcrSelection(hash_alg=alg, pcrs=pcrs))
    return tuple(banks)


def parse_quote(data: bytes) -> TpmQuote:
    """Parse a TPMS_ATTEST that must be a quote generated by a TPM."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise _fail(f"TPMS_ATTEST is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    r = _Reader(data, "TPMS_ATTEST")
    head = r.fields(_ATTEST_HEADER, "header")
    if head["magic"] != TPM_GENERATED_VALUE:
        raise _fail(
            f"TPMS_ATTEST magic is 0x{head['magic']:08x}; expected 0x{TPM_GENERATED_VALUE:08x}",
            Reason.EVIDENCE_VERSION_UNSUPPORTED,
        )
    if head["type"] != TPM_ST_ATTEST_QUOTE:
        raise _fail(
            f"TPMS_ATTEST type is 0x{head['type']:04x}; expected a quote (0x8018)",
            Reason.EVIDENCE_VERSION_UNSUPPORTED,
        )
    qualified_signer = r.tpm2b("qualifiedSigner", max_size=MAX_NAME)
    extra_data = r.tpm2b("extraData", max_size=MAX_DIGEST)
    clock = r.fields(_CLOCK_INFO, "clockInfo")
    if clock["safe"] > 1:
        raise _fail(f"clockInfo.safe is {clock['safe']}; expected 0 or 1")
    firmware = r.fields(_FIRMWARE, "firmwareVersion")
    selections = _parse_pcr_selections(r)
    pcr_digest = r.tpm2b("pcrDigest", max_size=MAX_DIGEST)
    r.end()
    return TpmQuote(
        raw=bytes(data),
        qualified_signer=qualified_signer,
        extra_data=extra_data,
        clock_info=ClockInfo(
            clock=clock["clock"],
            reset_count=clock["reset_count"],
            restart_count=clock["restart_count"],
            safe=bool(clock["safe"]),
        ),
        firmware_version=firmware["firmware_version"],
        pcr_selections=selections,
        pcr_digest=pcr_digest,
    )


def split_pcr_values(quote: TpmQuote, values: bytes) -> tuple[tuple[PcrSelection, int, bytes], ...]:
    """Cut the ``"pcrs"`` aux blob into (bank, pcr index, value) in selection order."""
    if len(values) != quote.pcr_values_size:
        raise _fail(
            f"pcrs is {len(values)} bytes; the quote selects {quote.pcr_count} PCRs "
            f"needing {quote.pcr_values_size} bytes",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    out: list[tuple[PcrSelection, int, bytes]] = []
    pos = 0
    for bank in quote.pcr_selections:
        for index in bank.pcrs:
            out.append((bank, index, values[pos : pos + bank.digest_size]))
            pos += bank.digest_size
    return tuple(out)


# --- TPMT_SIGNATURE ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TpmSignature:
    sig_alg: int
    hash_alg: int
    rsa_signature: bytes = b""
    ecdsa_r: bytes = b""
    ecdsa_s: bytes = b""


def parse_signature(data: bytes) -> TpmSignature:
    """Parse a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA)."""
    if len(data) > MAX_SIGNATURE_BYTES + MAX_ECC_COORD:
        raise _fail(f"TPMT_SIGNATURE is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    r = _Reader(data, "TPMT_SIGNATURE")
    sig_alg = r.u16("sigAlg")
    hash_alg = r.u16("hash")
    _hash_alg(hash_alg, "signature.hash")
    if sig_alg in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS):
        sig = r.tpm2b("signature.sig", max_size=MAX_RSA_BYTES)
        r.end()
        return TpmSignature(sig_alg=sig_alg, hash_alg=hash_alg, rsa_signature=sig)
    if sig_alg == TPM_ALG_ECDSA:
        sr = r.tpm2b("signature.signatureR", max_size=MAX_ECC_COORD)
        ss = r.tpm2b("signature.signatureS", max_size=MAX_ECC_COORD)
        r.end()
        return TpmSignature(sig_alg=sig_alg, hash_alg=hash_alg, ecdsa_r=sr, ecdsa_s=ss)
    raise _fail(
        f"signature algorithm 0x{sig_alg:04x} unsupported (RSASSA, RSAPSS, ECDSA)",
        Reason.EVIDENCE_FIELD_INVALID,
    )


# --- TPM2B_PUBLIC / TPMT_PUBLIC ------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SymDef:
    algorithm: int
    key_bits: int = 0
    mode: int = 0


@dataclass(frozen=True, kw_only=True)
class TpmPublic:
    """A TPMT_PUBLIC for an RSA or ECC key; ``raw`` is the TPMT_PUBLIC bytes (no size)."""

    raw: bytes
    type: int
    name_alg: int
    attributes: int
    auth_policy: bytes
    symmetric: SymDef
    scheme: int
    scheme_hash: int
    # RSA
    rsa_key_bits: int = 0
    rsa_exponent: int = 0
    rsa_modulus: bytes = b""
    # ECC
    curve: int = 0
    kdf: int = TPM_ALG_NULL
    ecc_x: bytes = b""
    ecc_y: bytes = b""

    @property
    def name(self) -> bytes:
        """The object's Name: nameAlg || H_nameAlg(TPMT_PUBLIC) (Part 1, 16)."""
        hash_name, _ = HASH_ALGS[self.name_alg]
        return self.name_alg.to_bytes(2, "big") + hashlib.new(hash_name, self.raw).digest()

    def has(self, attribute: int) -> bool:
        return self.attributes & attribute == attribute

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(n for bit, n in ATTRIBUTE_NAMES if self.attributes & bit)

    @property
    def rsa_public_exponent(self) -> int:
        # An exponent of zero means the default 2^16 + 1 (Part 2, 12.2.3.5).
        return self.rsa_exponent or 65537


def _parse_symdef(r: _Reader) -> SymDef:
    alg = r.u16("symmetric.algorithm")
    if alg == TPM_ALG_NULL:
        return SymDef(algorithm=alg)
    if alg != TPM_ALG_AES:
        raise _fail(f"symmetric algorithm 0x{alg:04x} unsupported", Reason.EVIDENCE_FIELD_INVALID)
    bits = r.u16("symmetric.keyBits")
    mode = r.u16("symmetric.mode")
    if bits not in (128, 192, 256) or mode != TPM_ALG_CFB:
        raise _fail(
            f"symmetric AES-{bits} mode 0x{mode:04x} unsupported (AES-CFB only)",
            Reason.EVIDENCE_FIELD_INVALID,
        )
    return SymDef(algorithm=alg, key_bits=bits, mode=mode)


def _parse_scheme(r: _Reader, field: str) -> tuple[int, int]:
    scheme = r.u16(f"{field}.scheme")
    if scheme == TPM_ALG_NULL:
        return scheme, TPM_ALG_NULL
    if scheme not in (TPM_ALG_RSASSA, TPM_ALG_RSAPSS, TPM_ALG_ECDSA):
        raise _fail(f"{field} 0x{scheme:04x} unsupported", Reason.EVIDENCE_FIELD_INVALID)
    hash_alg = r.u16(f"{field}.hashAlg")
    _hash_alg(hash_alg, f"{field}.hashAlg")
    return scheme, hash_alg


def parse_tpmt_public(data: bytes) -> TpmPublic:
    """Parse a TPMT_PUBLIC (no size prefix) for an RSA or ECC key."""
    if len(data) > MAX_PUBLIC_BYTES:
        raise _fail(f"TPMT_PUBLIC is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    r = _Reader(data, "TPMT_PUBLIC")
    head = r.fields(_PUBLIC_HEADER, "header")
    _hash_alg(head["name_alg"], "nameAlg")
    auth_policy = r.tpm2b("authPolicy", max_size=MAX_DIGEST)
    symmetric = _parse_symdef(r)
    common: dict[str, Any] = {
        "raw": bytes(data),
        "type": head["type"],
        "name_alg": head["name_alg"],
        "attributes": head["attributes"],
        "auth_policy": auth_policy,
        "symmetric": symmetric,
    }
    if head["type"] == TPM_ALG_RSA:
        scheme, scheme_hash = _parse_scheme(r, "rsa.scheme")
        key_bits = r.u16("rsa.keyBits")
        exponent = r.u32("rsa.exponent")
        modulus = r.tpm2b("rsa.unique", max_size=MAX_RSA_BYTES)
        if key_bits not in (1024, 2048, 3072, 4096) or len(modulus) * 8 != key_bits:
            raise _fail(
                f"RSA key declares {key_bits} bits with a {len(modulus)}-byte modulus",
                Reason.EVIDENCE_FIELD_INVALID,
            )
        r.end()
        return TpmPublic(
            **common,
            scheme=scheme,
            scheme_hash=scheme_hash,
            rsa_key_bits=key_bits,
            rsa_exponent=exponent,
            rsa_modulus=modulus,
        )
    if head["type"] == TPM_ALG_ECC:
        scheme, scheme_hash = _parse_scheme(r, "ecc.scheme")
        curve = r.u16("ecc.curveID")
        if curve not in CURVES:
            raise _fail(f"ECC curve 0x{curve:04x} unsupported", Reason.EVIDENCE_FIELD_INVALID)
        kdf = r.u16("ecc.kdf.scheme")
        if kdf != TPM_ALG_NULL:
            raise _fail(f"ECC kdf 0x{kdf:04x} unsupported", Reason.EVIDENCE_FIELD_INVALID)
        x = r.tpm2b("ecc.unique.x", max_size=MAX_ECC_COORD)
        y = r.tpm2b("ecc.unique.y", max_size=MAX_ECC_COORD)
        size = CURVES[curve][1]
        if len(x) != size or len(y) != size:
            raise _fail(
                f"ECC point coordinates are {len(x)}/{len(y)} bytes; {CURVES[curve][0]} "
                f"needs {size}",
                Reason.EVIDENCE_FIELD_INVALID,
            )
        r.end()
        return TpmPublic(
            **common, scheme=scheme, scheme_hash=scheme_hash, curve=curve, kdf=kdf, ecc_x=x, ecc_y=y
        )
    raise _fail(
        f"public key type 0x{head['type']:04x} unsupported (RSA, ECC)",
        Reason.EVIDENCE_FIELD_INVALID,
    )


def parse_public(data: bytes) -> TpmPublic:
    """Parse a TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC)."""
    if len(data) > MAX_PUBLIC_BYTES + 2:
        raise _fail(f"TPM2B_PUBLIC is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    r = _Reader(data, "TPM2B_PUBLIC")
    inner = r.tpm2b("publicArea", max_size=MAX_PUBLIC_BYTES)
    r.end()
    return parse_tpmt_public(inner)


# --- Evidence assembly ---------------------------------------------------------------


def check_aux_names(aux: Mapping[str, bytes]) -> None:
    unknown = sorted(set(aux) - AUX_NAMES)
    if unknown:
        raise _fail(
            f"unknown TPM evidence items {unknown}; known: {sorted(AUX_NAMES)}",
            Reason.EVIDENCE_FIELD_INVALID,
        )


def _from_json(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    """The JSON form of the shared Azure vTPM vector (trustee's tpm_evidence.json)."""
    try:
        doc = json.loads(data)
        quote = doc["tpm_quote"]
        message = base64.b64decode(quote["message"], validate=True)
        signature = base64.b64decode(quote["signature"], validate=True)
        ak_der = base64.b64decode(doc["ak_public"], validate=True)
        pcr_list = [bytes.fromhex(p) for p in quote["pcrs"]]
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
        raise _fail(f"TPM evidence JSON is malformed: {exc}") from exc
    parsed = parse_quote(message)
    # The JSON lists PCR values by index (0..23) of one bank; fedtee's "pcrs" is in
    # selection order, so pick the selected ones.
    if len(parsed.pcr_selections) != 1:
        raise _fail("TPM evidence JSON supports a single PCR bank", Reason.EVIDENCE_FIELD_INVALID)
    bank = parsed.pcr_selections[0]
    try:
        values = b"".join(pcr_list[i] for i in bank.pcrs)
    except IndexError:
        raise _fail(
            f"TPM evidence JSON lists {len(pcr_list)} PCRs; the quote selects {bank.pcrs}",
            Reason.EVIDENCE_FIELD_INVALID,
        ) from None
    return message, {"signature": signature, "pcrs": values, "ak_public_der": ak_der}


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """Raw TPMS_ATTEST plus named aux files, or the Azure-style JSON (aux merged in)."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise _fail(f"TPM evidence is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    items = dict(aux)
    if data.lstrip()[:1] == b"{":
        data, from_json = _from_json(data)
        items = {**from_json, **items}
    check_aux_names(items)
    parse_quote(data)
    return Evidence(tee=TeeType.TPM, data=data, aux=items)


def _describe_public(pub: TpmPublic) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "rsa" if pub.type == TPM_ALG_RSA else "ecc",
        "name_alg": HASH_ALGS[pub.name_alg][0],
        "name": pub.name.hex(),
        "attributes": list(pub.attribute_names),
    }
    if pub.type == TPM_ALG_RSA:
        out["rsa_bits"] = pub.rsa_key_bits
    else:
        out["curve"] = CURVES[pub.curve][0]
    return out


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of TPM evidence for ``fedtee attest show``."""
    check_aux_names(evidence.aux)
    q = parse_quote(evidence.data)
    out: dict[str, Any] = {
        "tee": TeeType.TPM.value,
        "type": "TPM_ST_ATTEST_QUOTE",
        "qualified_signer": q.qualified_signer.hex(),
        "extra_data": q.extra_data.hex(),
        "clock": q.clock_info.clock,
        "reset_count": q.clock_info.reset_count,
        "restart_count": q.clock_info.restart_count,
        "safe": q.clock_info.safe,
        "firmware_version": f"0x{q.firmware_version:016x}",
        "pcr_select": {s.hash_name: list(s.pcrs) for s in q.pcr_selections},
        "pcr_digest": q.pcr_digest.hex(),
    }
    if "signature" in evidence.aux:
        sig = parse_signature(evidence.aux["signature"])
        names = {TPM_ALG_RSASSA: "rsassa", TPM_ALG_RSAPSS: "rsapss", TPM_ALG_ECDSA: "ecdsa"}
        out["signature"] = {"alg": names[sig.sig_alg], "hash": HASH_ALGS[sig.hash_alg][0]}
    if "pcrs" in evidence.aux:
        out["pcrs"] = {
            f"{bank.hash_name}:{index}": value.hex()
            for bank, index, value in split_pcr_values(q, evidence.aux["pcrs"])
        }
    if "ak_public" in evidence.aux:
        out["ak"] = _describe_public(parse_public(evidence.aux["ak_public"]))
    if "ak_public_der" in evidence.aux:
        out["ak"] = {"spki_der": evidence.aux["ak_public_der"].hex()}
    out["aux"] = sorted(evidence.aux)
    return out


__all__ = [
    "ATTRIBUTE_NAMES",
    "AUX_NAMES",
    "ClockInfo",
    "PcrSelection",
    "SymDef",
    "TpmPublic",
    "TpmQuote",
    "TpmSignature",
    "check_aux_names",
    "describe",
    "evidence_from_files",
    "parse_public",
    "parse_quote",
    "parse_signature",
    "parse_tpmt_public",
    "split_pcr_values",
]
