"""Intel DCAP quote verification shared by the SGX and TDX verifiers.

Steps (each check below cites its step):

1. PCK chain: the chain embedded in the quote (certification data type 5) leads from the
   PCK certificate through the PCK Platform/Processor CA to a trusted Intel SGX Root CA;
   every certificate is valid at ``now``; the PCK is not on the CA's PCK CRL and the CA is
   not on the root CRL (a CRL past its nextUpdate gives a ``crl_stale`` warning, not a
   failure: Intel publishes CRLs monthly and an offline verifier may hold an older one).
2. QE report: signed by the PCK key (ECDSA P-256, SHA-256 over the 384-byte report).
3. Attestation key bound: QE report_data = SHA-256(attestation key || QE auth data) || 0^32.
4. Quote signature: ECDSA P-256 by the attestation key over header || body.
5. PCK SGX extensions (OID 1.2.840.113741.1.13.1): PPID, TCB component SVNs, PCESVN,
   CPUSVN, PCE-ID, FMSPC.
6. TCB signing chain (collateral ``tcb-signing-chain``/``intel``) to a trusted root, valid
   at ``now`` (expired -> :class:`CollateralError` with ``CERT_EXPIRED``), not on the root CRL.
7. TCB info (v2 SGX, v3 SGX/TDX): signature by the TCB signing key over the exact
   ``tcbInfo`` JSON bytes, issueDate <= now <= nextUpdate, FMSPC / PCE-ID / id match.
8. QE identity (v2): same signature and validity checks; the QE report's MRSIGNER,
   ISVPRODID and masked MISCSELECT / ATTRIBUTES must match; its ISVSVN picks a QE status.
9. TCB level: the first level (Intel lists them best first) whose 16 SGX component SVNs and
   PCESVN are all <= the PCK's (and for TDX whose TDX components are <= TEE_TCB_SVN,
   skipping the first two bytes when the TDX module major version is > 0) gives the platform
   status; none -> ``Unsupported`` (not an exception: appraisal rejects it). For TDX with
   ``tdxModuleIdentities`` the module identity ``TDX_<major>`` gives a module status. The
   final status converges platform, QE and module status as Intel's QVL does.

Collateral read (``CollateralSource.get(kind, key)``), all required:

=====================  ===========================  ==========================================
kind                   key                          content
=====================  ===========================  ==========================================
``sgx-tcbinfo``        FMSPC, lower-case hex        Intel PCS TCB info JSON (SGX quotes)
``tdx-tcbinfo``        FMSPC, lower-case hex        Intel PCS TCB info JSON (TDX quotes)
``sgx-qe-identity``    ``default``                  Intel PCS QE identity JSON (id "QE")
``tdx-qe-identity``    ``default``                  Intel PCS QE identity JSON (id "TD_QE")
``pck-crl``            ``platform`` / ``processor`` DER CRL of the PCK's issuing CA
``root-crl``           ``intel`` (*)                DER CRL of the Intel SGX Root CA
``tcb-signing-chain``  ``intel``                    PEM: TCB Signing certificate (+ root)
=====================  ===========================  ==========================================

(*) for a trusted root other than the real Intel SGX Root CA (fake roots in tests), the key is
that root's SHA-256 fingerprint in hex (:func:`root_crl_key`).

Expiry of the TCB Signing certificate (step 6) is reported as ``CollateralError`` with
``CERT_EXPIRED``; a TCB info or QE identity past its nextUpdate as ``COLLATERAL_EXPIRED``.

Results of the costly steps that depend only on their input bytes (chain signatures, CRL
signatures, collateral signatures and JSON parsing, and the QE report signature, which a QE
reuses across quotes until its attestation key changes) are cached per process, keyed by
those exact bytes and the SHA-256 fingerprints of the certificates involved (bounded: a
full cache is emptied). Every cached item's time validity is re-checked against ``now`` on
each use, so the cache never changes an outcome.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fedtee.attest.evidence.dcap import INTEL_QE_VENDOR_ID, Quote, SgxReportBody, TdReportBody
from fedtee.attest.model import CollateralSource, TcbStatus, TeeType
from fedtee.errors import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Reason,
    VerificationError,
)

# --- PCK certificate SGX extensions ----------------------------------------------------

SGX_EXTENSIONS_OID: Final = "1.2.840.113741.1.13.1"
_OID_PPID: Final = SGX_EXTENSIONS_OID + ".1"
_OID_TCB: Final = SGX_EXTENSIONS_OID + ".2"
_OID_PCESVN: Final = _OID_TCB + ".17"
_OID_CPUSVN: Final = _OID_TCB + ".18"
_OID_PCEID: Final = SGX_EXTENSIONS_OID + ".3"
_OID_FMSPC: Final = SGX_EXTENSIONS_OID + ".4"
_OID_SGX_TYPE: Final = SGX_EXTENSIONS_OID + ".5"

_TAG_INTEGER: Final = 0x02
_TAG_OCTET_STRING: Final = 0x04
_TAG_OID: Final = 0x06
_TAG_ENUMERATED: Final = 0x0A
_TAG_SEQUENCE: Final = 0x30

MAX_COLLATERAL_BYTES: Final = 512 * 1024
_CACHE_LIMIT: Final = 1024
# What cryptography raises, often lazily on first access to a field, for damaged X.509 data.
_X509_ERRORS: Final = (
    ValueError,
    TypeError,
    InvalidSignature,
    UnsupportedAlgorithm,
    x509.InvalidVersion,
    x509.DuplicateExtension,
)
# The real Intel SGX Root CA (same pin as fedtee.attest.trust.intel.ROOT_FINGERPRINT).
INTEL_ROOT_FINGERPRINT: Final = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)


@dataclass(frozen=True, kw_only=True)
class PckExtensions:
    """What Intel's PCK certificate says about the platform (step 5)."""

    ppid: bytes
    tcb_components: tuple[int, ...]  # 16 SGX TCB component SVNs
    pcesvn: int
    cpusvn: bytes
    pce_id: bytes
    fmspc: bytes
    sgx_type: int


def _cert_error(message: str) -> VerificationError:
    return VerificationError(message, reason=Reason.CERT_MALFORMED)


def _der_items(data: bytes, what: str) -> list[tuple[int, bytes]]:
    """Split DER ``data`` into (tag, value) items; definite lengths only, as DER requires."""
    items: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise _cert_error(f"{what}: truncated DER header")
        tag, first = data[pos], data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            if count == 0 or count > 3 or pos + count > len(data):
                raise _cert_error(f"{what}: bad DER length")
            length = int.from_bytes(data[pos : pos + count], "big")
            pos += count
        if pos + length > len(data):
            raise _cert_error(f"{what}: DER value runs past its container")
        items.append((tag, data[pos : pos + length]))
        pos += length
    return items


def _der_oid(value: bytes) -> str:
    if not value:
        raise _cert_error("empty OID")
    arcs = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for byte in value[1:]:
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
    if value[-1] & 0x80:
        raise _cert_error("truncated OID")
    return ".".join(str(a) for a in arcs)


def _der_int(tag: int, value: bytes, what: str) -> int:
    if tag not in (_TAG_INTEGER, _TAG_ENUMERATED) or not value or len(value) > 8:
        raise _cert_error(f"{what}: expected a small INTEGER")
    return int.from_bytes(value, "big", signed=True)


def _der_pairs(data: bytes, what: str) -> dict[str, tuple[int, bytes]]:
    """A SEQUENCE OF SEQUENCE { OID, value } as {oid: (tag, value)}."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, inner in _der_items(data, what):
        parts = _der_items(inner, what) if tag == _TAG_SEQUENCE else []
        if len(parts) != 2 or parts[0][0] != _TAG_OID:
            raise _cert_error(f"{what}: expected SEQUENCE {{OID, value}}")
        out[_der_oid(parts[0][1])] = parts[1]
    return out


def _octets(pairs: Mapping[str, tuple[int, bytes]], oid: str, size: int, what: str) -> bytes:
    tag, value = _need(pairs, oid, what)
    if tag != _TAG_OCTET_STRING or len(value) != size:
        raise _cert_error(f"{what}: {oid} is not a {size}-byte OCTET STRING")
    return value


def _need(pairs: Mapping[str, tuple[int, bytes]], oid: str, what: str) -> tuple[int, bytes]:
    try:
        return pairs[oid]
    except KeyError:
        raise _cert_error(f"{what}: {oid} missing") from None


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Step 5: read the SGX extensions of a PCK certificate (CERT_MALFORMED if absent)."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSIONS_OID))
    except (x509.ExtensionNotFound, *_X509_ERRORS) as exc:
        raise _cert_error("PCK certificate has no readable SGX extensions") from exc
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise _cert_error("PCK certificate SGX extensions are not raw DER")
    outer = _der_items(value.value, "SGX extensions")
    if len(outer) != 1 or outer[0][0] != _TAG_SEQUENCE:
        raise _cert_error("SGX extensions: expected one SEQUENCE")
    top = _der_pairs(outer[0][1], "SGX extensions")
    tcb_tag, tcb_value = _need(top, _OID_TCB, "SGX extensions")
    if tcb_tag != _TAG_SEQUENCE:
        raise _cert_error("SGX extensions: TCB is not a SEQUENCE")
    tcb = _der_pairs(tcb_value, "SGX TCB")
    components = tuple(
        _der_int(*_need(tcb, f"{_OID_TCB}.{i}", "SGX TCB"), f"TCB component {i}")
        for i in range(1, 17)
    )
    if any(not 0 <= c <= 255 for c in components):
        raise _cert_error("SGX TCB component SVN out of range 0..255")
    pcesvn = _der_int(*_need(tcb, _OID_PCESVN, "SGX TCB"), "PCESVN")
    if not 0 <= pcesvn <= 0xFFFF:
        raise _cert_error("PCESVN out of range")
    sgx_type = _der_int(*_need(top, _OID_SGX_TYPE, "SGX extensions"), "SGX type")
    return PckExtensions(
        ppid=_octets(top, _OID_PPID, 16, "SGX extensions"),
        tcb_components=components,
        pcesvn=pcesvn,
        cpusvn=_octets(tcb, _OID_CPUSVN, 16, "SGX TCB"),
        pce_id=_octets(top, _OID_PCEID, 2, "SGX extensions"),
        fmspc=_octets(top, _OID_FMSPC, 6, "SGX extensions"),
        sgx_type=sgx_type,
    )


# --- small bounded caches --------------------------------------------------------------

_K = TypeVar("_K")
_V = TypeVar("_V")


class _Cache(dict[_K, _V]):
    """A dict that forgets everything when full: simple, bounded, and enough for a handful
    of platforms and collateral documents that repeat across many verifications."""

    def put(self, key: _K, value: _V) -> _V:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[key] = value
        return value


_memo: _Cache[tuple[int, str], tuple[x509.Certificate, Any]] = _Cache()


def _per_cert(cert: x509.Certificate, name: str, compute: Callable[[], _V]) -> _V:
    """Memoise a fact about a certificate object: cached chains and the trusted roots hand
    the same objects back on every verification, and cryptography re-parses on each call."""
    hit = _memo.get((id(cert), name))
    if hit is not None and hit[0] is cert:
        value: _V = hit[1]
        return value
    value = compute()
    _memo.put((id(cert), name), (cert, value))
    return value


def fingerprint(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER."""
    return _per_cert(cert, "fingerprint", lambda: cert.fingerprint(hashes.SHA256()))


def _roots_key(roots: Sequence[x509.Certificate]) -> tuple[bytes, ...]:
    return tuple(fingerprint(r) for r in roots)


# --- signatures ------------------------------------------------------------------------


def _raw_ecdsa_to_der(raw: bytes) -> bytes:
    if len(raw) != 64:
        raise ValueError("raw ECDSA P-256 signature must be 64 bytes")
    return encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, raw_sig: bytes, message: bytes) -> bool:
    try:
        key.verify(_raw_ecdsa_to_der(raw_sig), message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


def _p256_key(cert: x509.Certificate, what: str) -> ec.EllipticCurvePublicKey:
    try:
        key = cert.public_key()
    except _X509_ERRORS as exc:
        raise _cert_error(f"{what}: unreadable public key") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise _cert_error(f"{what}: key is not ECDSA P-256")
    return key


# --- certificate chains (steps 1 and 6) ------------------------------------------------

ErrorFactory = Callable[[str, Reason], AttestationError]


def _verification_error(message: str, reason: Reason) -> AttestationError:
    return VerificationError(message, reason=reason)


def _collateral_error(message: str, reason: Reason) -> AttestationError:
    return CollateralError(message, reason=reason)


def _cn(cert: x509.Certificate) -> str:
    def compute() -> str:
        names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return str(names[0].value) if names else cert.subject.rfc4514_string()

    return _per_cert(cert, "cn", compute)


def _signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except _X509_ERRORS:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    def compute() -> bool:
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except (x509.ExtensionNotFound, *_X509_ERRORS):
            return False
        return bc.ca

    return _per_cert(cert, "is_ca", compute)


@dataclass(frozen=True)
class _Chain:
    certs: tuple[x509.Certificate, ...]  # leaf first, ending with the trusted root


def load_pem_chain(pem: bytes, what: str, error: ErrorFactory) -> tuple[x509.Certificate, ...]:
    try:
        certs = tuple(x509.load_pem_x509_certificates(pem))
    except _X509_ERRORS as exc:
        raise error(f"{what}: unreadable PEM certificates", Reason.CERT_MALFORMED) from exc
    if not certs or len(certs) > 4:
        raise error(
            f"{what}: expected 1 to 4 certificates, got {len(certs)}", Reason.CERT_MALFORMED
        )
    return certs


_chain_cache: _Cache[tuple[bytes, tuple[bytes, ...]], _Chain] = _Cache()


def _build_chain(
    certs: tuple[x509.Certificate, ...],
    roots: Sequence[x509.Certificate],
    what: str,
    error: ErrorFactory,
) -> _Chain:
    root_fps = {fingerprint(r) for r in roots}
    # A copy of the root inside the chain proves nothing; drop it and find the trusted one.
    path = [c for c in certs if fingerprint(c) not in root_fps]
    if not path:
        raise error(f"{what}: no certificate below the root", Reason.CHAIN_INVALID)
    for child, issuer in itertools.pairwise(path):
        if child.issuer != issuer.subject or not _is_ca(issuer) or not _signed_by(child, issuer):
            raise error(
                f"{what}: {_cn(child)!r} is not signed by {_cn(issuer)!r}", Reason.CHAIN_INVALID
            )
    top = path[-1]
    for root in roots:
        if top.issuer == root.subject and _signed_by(top, root):
            return _Chain(certs=(*path, root))
    if top.issuer == top.subject or any(c.subject == top.issuer for c in certs):
        raise error(
            f"{what}: chain ends at {top.issuer.rfc4514_string()!r}, not a trusted root",
            Reason.CHAIN_UNTRUSTED_ROOT,
        )
    raise error(f"{what}: issuer of {_cn(top)!r} not found", Reason.CHAIN_UNTRUSTED_ROOT)


def _check_validity(chain: _Chain, now: datetime, what: str, error: ErrorFactory) -> None:
    for cert in chain.certs:
        if now < cert.not_valid_before_utc:
            raise error(
                f"{what}: {_cn(cert)!r} not valid before {cert.not_valid_before_utc.isoformat()}",
                Reason.CERT_NOT_YET_VALID,
            )
        if now > cert.not_valid_after_utc:
            raise error(
                f"{what}: {_cn(cert)!r} expired {cert.not_valid_after_utc.isoformat()}",
                Reason.CERT_EXPIRED,
            )


def verify_chain(
    pem: bytes,
    roots: Sequence[x509.Certificate],
    *,
    now: datetime,
    what: str,
    error: ErrorFactory = _verification_error,
) -> tuple[x509.Certificate, ...]:
    """Verify a PEM chain (leaf first) up to one of ``roots``; returns leaf..root."""
    if not roots:
        raise error(f"{what}: no trusted Intel SGX root given", Reason.CHAIN_UNTRUSTED_ROOT)
    key = (pem, _roots_key(roots))
    chain = _chain_cache.get(key)
    if chain is None:
        try:
            chain = _build_chain(load_pem_chain(pem, what, error), roots, what, error)
        except _X509_ERRORS as exc:
            # cryptography parses certificate fields lazily: a damaged field surfaces here.
            raise error(f"{what}: malformed certificate", Reason.CERT_MALFORMED) from exc
        _chain_cache.put(key, chain)
    _check_validity(chain, now, what, error)
    return chain.certs


# --- CRLs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Crl:
    issuer_cn: str
    revoked: frozenset[int]
    last_update: datetime
    next_update: datetime | None


_crl_cache: _Cache[tuple[bytes, bytes], _Crl] = _Cache()


def _load_crl(der: bytes, issuer: x509.Certificate, what: str) -> _Crl:
    key = (der, fingerprint(issuer))
    cached = _crl_cache.get(key)
    if cached is not None:
        return cached
    try:
        parsed = _parse_crl(der, issuer, what)
    except _X509_ERRORS as exc:
        # cryptography parses CRL fields lazily: a damaged field surfaces here.
        raise VerificationError(f"{what}: malformed CRL", reason=Reason.CRL_INVALID) from exc
    return _crl_cache.put(key, parsed)


def _parse_crl(der: bytes, issuer: x509.Certificate, what: str) -> _Crl:
    try:
        crl = x509.load_der_x509_crl(der)
    except ValueError:
        crl = x509.load_pem_x509_crl(der)
    if crl.issuer != issuer.subject:
        raise VerificationError(
            f"{what}: CRL issued by {crl.issuer.rfc4514_string()!r}, expected {_cn(issuer)!r}",
            reason=Reason.CRL_INVALID,
        )
    try:
        signed = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except _X509_ERRORS as exc:  # the issuer's key, parsed lazily, or a key type it cannot use
        raise VerificationError(
            f"{what}: CRL issuer key unusable: {exc}", reason=Reason.CRL_INVALID
        ) from exc
    if not signed:
        raise VerificationError(f"{what}: CRL signature invalid", reason=Reason.CRL_INVALID)
    return _Crl(
        issuer_cn=_cn(issuer),
        revoked=frozenset(r.serial_number for r in crl),
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
    )


def check_revocation(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    crl_der: bytes,
    *,
    now: datetime,
    what: str,
    warnings: list[str],
    error: ErrorFactory = _verification_error,
) -> None:
    crl = _load_crl(crl_der, issuer, what)
    if now < crl.last_update:
        raise VerificationError(
            f"{what}: CRL issued {crl.last_update.isoformat()}, after now",
            reason=Reason.CRL_INVALID,
        )
    if crl.next_update is not None and now > crl.next_update:
        warning = f"crl_stale: {crl.issuer_cn} CRL next update {crl.next_update.isoformat()}"
        if warning not in warnings:
            warnings.append(warning)
    if cert.serial_number in crl.revoked:
        raise error(
            f"{what}: {_cn(cert)!r} serial {cert.serial_number:x} is revoked", Reason.CERT_REVOKED
        )


# --- collateral documents (steps 7 and 8) ----------------------------------------------


def _collateral(source: CollateralSource, kind: str, key: str) -> bytes:
    data = source.get(kind, key)
    if not isinstance(data, bytes) or len(data) > MAX_COLLATERAL_BYTES:
        raise CollateralError(
            f"{kind}/{key}: not bytes or too large", reason=Reason.COLLATERAL_MALFORMED
        )
    return data


def _malformed(what: str, detail: str) -> CollateralError:
    return CollateralError(f"{what}: {detail}", reason=Reason.COLLATERAL_MALFORMED)


_SIGNATURE_TAIL = re.compile(rb',\s*"signature"\s*:\s*"([0-9a-fA-F]{128})"\s*\}\s*$')


def split_signed_json(data: bytes, top: str, what: str) -> tuple[bytes, dict[str, Any], bytes]:
    """Intel signs the exact bytes of the ``top`` member: return (those bytes, parsed, sig)."""
    head = re.match(rb'\s*\{\s*"' + top.encode() + rb'"\s*:\s*', data)
    tail = _SIGNATURE_TAIL.search(data)
    if head is None or tail is None or tail.start() < head.end():
        raise _malformed(what, f'expected {{"{top}": {{...}}, "signature": "<128 hex>"}}')
    raw = data[head.end() : tail.start()]
    try:
        whole = json.loads(data)
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _malformed(what, "not JSON") from exc
    if not isinstance(whole, dict) or set(whole) != {top, "signature"} or whole[top] != body:
        raise _malformed(what, "unexpected members")
    if not isinstance(body, dict):
        raise _malformed(what, f"{top} is not an object")
    return raw, body, bytes.fromhex(tail.group(1).decode())


def _parse_time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise _malformed(what, "date is not a string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _malformed(what, f"bad date {value!r}") from exc
    if parsed.tzinfo is None:
        raise _malformed(what, f"date {value!r} has no time zone")
    return parsed


def _int(value: Any, what: str, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFF:
        raise _malformed(what, f"{field} is not a small non-negative integer")
    return value


def _hex(value: Any, what: str, field: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or len(raw) != size:
        raise _malformed(what, f"{field} is not {size} bytes of hex")
    return raw


def _status(value: Any, what: str) -> TcbStatus:
    try:
        status = TcbStatus(value)
    except ValueError:
        raise _malformed(what, f"unknown tcbStatus {value!r}") from None
    if status in (TcbStatus.UNSUPPORTED, TcbStatus.NOT_APPLICABLE):
        raise _malformed(what, f"tcbStatus {value!r} is not an Intel status")
    return status


def _advisories(level: Mapping[str, Any], what: str) -> tuple[str, ...]:
    ids = level.get("advisoryIDs", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _malformed(what, "advisoryIDs is not a list of strings")
    return tuple(ids)


@dataclass(frozen=True, kw_only=True)
class TcbLevel:
    sgx_components: tuple[int, ...]
    pcesvn: int
    tdx_components: tuple[int, ...] | None
    status: TcbStatus
    tcb_date: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SvnLevel:
    isvsvn: int
    status: TcbStatus
    tcb_date: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class TdxModuleIdentity:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[SvnLevel, ...]


@dataclass(frozen=True, kw_only=True)
class TcbInfo:
    id: str  # "SGX" or "TDX"
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    evaluation_number: int
    levels: tuple[TcbLevel, ...]
    tdx_module: TdxModuleIdentity | None
    tdx_module_identities: tuple[TdxModuleIdentity, ...]


@dataclass(frozen=True, kw_only=True)
class QeIdentity:
    id: str  # "QE" or "TD_QE"
    version: int
    issue_date: datetime
    next_update: datetime
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[SvnLevel, ...]


def _svn_levels(raw: Any, what: str) -> tuple[SvnLevel, ...]:
    if not isinstance(raw, list) or not raw:
        raise _malformed(what, "tcbLevels is not a non-empty list")
    out = []
    for level in raw:
        if not isinstance(level, dict) or not isinstance(level.get("tcb"), dict):
            raise _malformed(what, "TCB level is not an object with a tcb member")
        out.append(
            SvnLevel(
                isvsvn=_int(level["tcb"].get("isvsvn"), what, "isvsvn"),
                status=_status(level.get("tcbStatus"), what),
                tcb_date=str(level.get("tcbDate", "")),
                advisory_ids=_advisories(level, what),
            )
        )
    return tuple(out)


def _module_identity(raw: Any, what: str, *, with_levels: bool) -> TdxModuleIdentity:
    if not isinstance(raw, dict):
        raise _malformed(what, "TDX module identity is not an object")
    return TdxModuleIdentity(
        id=str(raw.get("id", "")),
        mrsigner=_hex(raw.get("mrsigner"), what, "mrsigner", 48),
        attributes=_hex(raw.get("attributes"), what, "attributes", 8),
        attributes_mask=_hex(raw.get("attributesMask"), what, "attributesMask", 8),
        levels=_svn_levels(raw.get("tcbLevels"), what) if with_levels else (),
    )


def _components(raw: Any, what: str, field: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) != 16:
        raise _malformed(what, f"{field} is not a list of 16 components")
    out = []
    for comp in raw:
        if not isinstance(comp, dict):
            raise _malformed(what, f"{field} entry is not an object")
        out.append(_int(comp.get("svn"), what, f"{field}.svn"))
    return tuple(out)


def _tcb_level(raw: Any, version: int, tdx: bool, what: str) -> TcbLevel:
    if not isinstance(raw, dict) or not isinstance(raw.get("tcb"), dict):
        raise _malformed(what, "TCB level is not an object with a tcb member")
    tcb = raw["tcb"]
    if version == 2:
        sgx = tuple(
            _int(tcb.get(f"sgxtcbcomp{i:02d}svn"), what, f"sgxtcbcomp{i:02d}svn")
            for i in range(1, 17)
        )
    else:
        sgx = _components(tcb.get("sgxtcbcomponents"), what, "sgxtcbcomponents")
    return TcbLevel(
        sgx_components=sgx,
        pcesvn=_int(tcb.get("pcesvn"), what, "pcesvn"),
        tdx_components=(
            _components(tcb.get("tdxtcbcomponents"), what, "tdxtcbcomponents") if tdx else None
        ),
        status=_status(raw.get("tcbStatus"), what),
        tcb_date=str(raw.get("tcbDate", "")),
        advisory_ids=_advisories(raw, what),
    )


def parse_tcb_info(body: Mapping[str, Any], what: str) -> TcbInfo:
    version = body.get("version")
    if version not in (2, 3):
        raise _malformed(what, f"tcbInfo version {version!r}; supported: 2, 3")
    ident = str(body.get("id", "SGX")) if version == 3 else "SGX"
    if ident not in ("SGX", "TDX"):
        raise _malformed(what, f"tcbInfo id {ident!r}")
    tdx = ident == "TDX"
    if body.get("tcbType") != 0:
        # tcbType 0 is the only defined mapping of SVNs to TCB components.
        raise _malformed(what, f"tcbType {body.get('tcbType')!r}; supported: 0")
    levels = body.get("tcbLevels")
    if not isinstance(levels, list) or not levels or len(levels) > 256:
        raise _malformed(what, "tcbLevels is not a non-empty list")
    identities = body.get("tdxModuleIdentities", [])
    if not isinstance(identities, list):
        raise _malformed(what, "tdxModuleIdentities is not a list")
    return TcbInfo(
        id=ident,
        version=version,
        issue_date=_parse_time(body.get("issueDate"), what),
        next_update=_parse_time(body.get("nextUpdate"), what),
        fmspc=_hex(body.get("fmspc"), what, "fmspc", 6),
        pce_id=_hex(body.get("pceId"), what, "pceId", 2),
        evaluation_number=_int(
            body.get("tcbEvaluationDataNumber"), what, "tcbEvaluationDataNumber"
        ),
        levels=tuple(_tcb_level(level, version, tdx, what) for level in levels),
        tdx_module=(
            _module_identity(body.get("tdxModule"), what, with_levels=False) if tdx else None
        ),
        tdx_module_identities=tuple(
            _module_identity(i, what, with_levels=True) for i in identities
        ),
    )


def parse_qe_identity(body: Mapping[str, Any], what: str) -> QeIdentity:
    version = body.get("version")
    if version != 2:
        raise _malformed(what, f"enclaveIdentity version {version!r}; supported: 2")
    return QeIdentity(
        id=str(body.get("id", "")),
        version=version,
        issue_date=_parse_time(body.get("issueDate"), what),
        next_update=_parse_time(body.get("nextUpdate"), what),
        miscselect=_hex(body.get("miscselect"), what, "miscselect", 4),
        miscselect_mask=_hex(body.get("miscselectMask"), what, "miscselectMask", 4),
        attributes=_hex(body.get("attributes"), what, "attributes", 16),
        attributes_mask=_hex(body.get("attributesMask"), what, "attributesMask", 16),
        mrsigner=_hex(body.get("mrsigner"), what, "mrsigner", 32),
        isvprodid=_int(body.get("isvprodid"), what, "isvprodid"),
        levels=_svn_levels(body.get("tcbLevels"), what),
    )


_D = TypeVar("_D")
_doc_cache: _Cache[tuple[bytes, bytes, str], Any] = _Cache()


def _signed_document(
    data: bytes,
    *,
    top: str,
    parse: Callable[[Mapping[str, Any], str], _D],
    signer: x509.Certificate,
    what: str,
) -> _D:
    """Step 7/8: the signature by the TCB signing key over the exact body bytes."""
    key = (data, fingerprint(signer), top)
    cached = _doc_cache.get(key)
    if cached is not None:
        parsed: _D = cached
        return parsed
    raw, body, signature = split_signed_json(data, top, what)
    if not _ecdsa_ok(_p256_key(signer, "TCB signing certificate"), signature, raw):
        raise CollateralError(
            f"{what}: signature does not verify with {_cn(signer)!r}",
            reason=Reason.COLLATERAL_SIGNATURE_INVALID,
        )
    parsed = parse(body, what)
    _doc_cache.put(key, parsed)
    return parsed


def _check_window(issue: datetime, next_update: datetime, now: datetime, what: str) -> None:
    if now < issue:
        raise CollateralError(
            f"{what}: issued {issue.isoformat()}, after now", reason=Reason.COLLATERAL_NOT_YET_VALID
        )
    if now > next_update:
        raise CollateralError(
            f"{what}: next update was due {next_update.isoformat()}",
            reason=Reason.COLLATERAL_EXPIRED,
        )


# --- TCB evaluation (step 9) -----------------------------------------------------------


def _converge(platform: TcbStatus, other: TcbStatus) -> TcbStatus:
    """Intel QVL's convergence of the platform status with the QE or TDX module status."""
    if platform is TcbStatus.UNSUPPORTED or other is TcbStatus.UNSUPPORTED:
        return TcbStatus.UNSUPPORTED
    if other is TcbStatus.REVOKED or platform is TcbStatus.REVOKED:
        return TcbStatus.REVOKED
    if other is TcbStatus.OUT_OF_DATE:
        if platform in (TcbStatus.UP_TO_DATE, TcbStatus.SW_HARDENING_NEEDED):
            return TcbStatus.OUT_OF_DATE
        if platform in (
            TcbStatus.CONFIGURATION_NEEDED,
            TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED,
        ):
            return TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    return platform


def match_tcb_level(
    info: TcbInfo, pck: PckExtensions, tee_tcb_svn: bytes | None
) -> TcbLevel | None:
    """The first TCB level the platform meets, or None (Unsupported)."""
    tdx_start = 2 if tee_tcb_svn is not None and tee_tcb_svn[1] > 0 else 0
    for level in info.levels:
        if pck.pcesvn < level.pcesvn:
            continue
        if any(
            have < need for have, need in zip(pck.tcb_components, level.sgx_components, strict=True)
        ):
            continue
        if tee_tcb_svn is not None:
            if level.tdx_components is None:
                continue
            if any(tee_tcb_svn[i] < level.tdx_components[i] for i in range(tdx_start, 16)):
                continue
        return level
    return None


def _first_svn_level(levels: Sequence[SvnLevel], svn: int) -> SvnLevel | None:
    return next((level for level in levels if level.isvsvn <= svn), None)


def _masked_equal(a: bytes, b: bytes, mask: bytes) -> bool:
    return all((x & m) == (y & m) for x, y, m in zip(a, b, mask, strict=True))


def _module_status(info: TcbInfo, td: TdReportBody) -> tuple[TcbStatus | None, SvnLevel | None]:
    """TDX module identity: mrsigner/attributes must match; TDX 1.5 modules get a status."""
    major = td.tee_tcb_svn[1]
    if major > 0 and info.tdx_module_identities:
        wanted = f"TDX_{major:02d}"
        identity = next((i for i in info.tdx_module_identities if i.id == wanted), None)
        if identity is None:
            return TcbStatus.UNSUPPORTED, None
    elif info.tdx_module is not None:
        identity = info.tdx_module
    else:
        return None, None
    if identity.mrsigner != td.mrsignerseam or not _masked_equal(
        td.seam_attributes, identity.attributes, identity.attributes_mask
    ):
        raise VerificationError(
            f"TDX module MRSIGNERSEAM/attributes do not match tcbInfo {identity.id or 'tdxModule'}",
            reason=Reason.TCB_MISMATCH,
        )
    if not identity.levels:
        return None, None
    level = _first_svn_level(identity.levels, td.tee_tcb_svn[0])
    return (level.status if level else TcbStatus.UNSUPPORTED), level


# --- the whole verification ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DcapResult:
    quote: Quote
    pck: PckExtensions
    pck_certificate: x509.Certificate
    tcb_status: TcbStatus
    platform_status: TcbStatus
    qe_status: TcbStatus
    module_status: TcbStatus | None
    tcb_date: str | None
    advisory_ids: tuple[str, ...]
    tcb_evaluation_number: int
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class QuoteSignatures:
    """Steps 1-5 done: the quote is signed by a key the QE certified with a genuine PCK."""

    pck: PckExtensions
    pck_certificate: x509.Certificate
    warnings: tuple[str, ...]


def root_crl_key(root: x509.Certificate) -> str:
    """``intel`` for the real Intel SGX Root CA, else the root's SHA-256 fingerprint (hex):
    a verifier trusting several roots (e.g. a fake one in tests) needs one CRL per root."""
    digest = fingerprint(root)
    return "intel" if digest == INTEL_ROOT_FINGERPRINT else digest.hex()


def _pck_crl_key(issuer: x509.Certificate) -> str:
    cn = _cn(issuer)
    if "Platform" in cn:
        return "platform"
    if "Processor" in cn:
        return "processor"
    raise _cert_error(f"PCK issued by {cn!r}, neither the Platform nor the Processor CA")


def verify_quote_signatures(
    quote: Quote,
    *,
    roots: Sequence[x509.Certificate],
    collateral: CollateralSource,
    now: datetime,
) -> QuoteSignatures:
    warnings: list[str] = []
    cert = quote.certification
    # Step 1: PCK chain and revocation.
    chain = verify_chain(cert.pck_chain_pem, roots, now=now, what="PCK chain")
    if len(chain) != 3:
        raise VerificationError(
            f"PCK chain has {len(chain)} certificates; expected PCK -> PCK CA -> root",
            reason=Reason.CHAIN_INVALID,
        )
    pck_cert, pck_ca, root = chain
    if _is_ca(pck_cert):
        raise VerificationError("PCK certificate is a CA certificate", reason=Reason.CHAIN_INVALID)
    check_revocation(
        pck_cert,
        pck_ca,
        _collateral(collateral, "pck-crl", _pck_crl_key(pck_ca)),
        now=now,
        what="PCK CRL",
        warnings=warnings,
    )
    check_revocation(
        pck_ca,
        root,
        _collateral(collateral, "root-crl", root_crl_key(root)),
        now=now,
        what="root CRL",
        warnings=warnings,
    )
    # Step 2: the QE report is signed by the PCK key. A QE keeps its attestation key across
    # many quotes, so the same (PCK, QE report, signature) recurs: remember verified triples.
    qe_key = (fingerprint(pck_cert), cert.qe_report_bytes, cert.qe_report_signature)
    if qe_key not in _qe_report_cache:
        if not _ecdsa_ok(
            _p256_key(pck_cert, "PCK certificate"), cert.qe_report_signature, cert.qe_report_bytes
        ):
            raise VerificationError(
                "QE report signature does not verify with the PCK key",
                reason=Reason.QE_REPORT_SIGNATURE_INVALID,
            )
        _qe_report_cache.put(qe_key, True)
    # Step 3: the QE vouches for this attestation key.
    expected = hashlib.sha256(quote.attestation_key + cert.qe_auth_data).digest() + bytes(32)
    if cert.qe_report.report_data != expected:
        raise VerificationError(
            "QE report_data is not SHA-256(attestation key || QE auth data)",
            reason=Reason.ATTESTATION_KEY_NOT_BOUND,
        )
    # Step 4: the quote signature by the attestation key.
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + quote.attestation_key
        )
    except ValueError as exc:
        raise VerificationError(
            "attestation key is not a P-256 point", reason=Reason.SIGNATURE_INVALID
        ) from exc
    if not _ecdsa_ok(att_key, quote.signature, quote.signed_bytes):
        raise VerificationError(
            "quote signature does not verify with the attestation key",
            reason=Reason.SIGNATURE_INVALID,
        )
    if quote.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
        raise EvidenceFormatError(
            f"QE vendor id {quote.header.qe_vendor_id.hex()} is not Intel's",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    # Step 5: what the PCK certificate says about the platform.
    return QuoteSignatures(
        pck=_pck_extensions(pck_cert), pck_certificate=pck_cert, warnings=tuple(warnings)
    )


_ext_cache: _Cache[bytes, PckExtensions] = _Cache()
_qe_report_cache: _Cache[tuple[bytes, bytes, bytes], bool] = _Cache()


def _pck_extensions(cert: x509.Certificate) -> PckExtensions:
    fp = fingerprint(cert)
    cached = _ext_cache.get(fp)
    return cached if cached is not None else _ext_cache.put(fp, parse_pck_extensions(cert))


def tcb_signer(
    *,
    roots: Sequence[x509.Certificate],
    collateral: CollateralSource,
    now: datetime,
    warnings: list[str],
) -> x509.Certificate:
    """Step 6: the TCB Signing certificate, verified to a trusted root at ``now``."""
    chain = verify_chain(
        _collateral(collateral, "tcb-signing-chain", "intel"),
        roots,
        now=now,
        what="TCB signing chain",
        error=_collateral_error,
    )
    signer = chain[0]
    # Only Intel's TCB Signing certificate, issued directly by the root, may sign TCB info.
    # Without this, a PCK key extracted from one compromised platform, presented with its
    # own chain, could sign a tcbInfo calling every platform UpToDate.
    if len(chain) != 2 or _is_ca(signer) or "SGX TCB Signing" not in _cn(signer):
        raise CollateralError(
            f"TCB signing chain: {_cn(signer)!r} is not an SGX TCB Signing certificate "
            "issued by the root",
            reason=Reason.CHAIN_INVALID,
        )
    check_revocation(
        signer,
        chain[-1],
        _collateral(collateral, "root-crl", root_crl_key(chain[-1])),
        now=now,
        what="root CRL",
        warnings=warnings,
        error=_collateral_error,
    )
    return signer


def verify_quote(
    quote: Quote,
    *,
    tee: TeeType,
    roots: Sequence[x509.Certificate],
    collateral: CollateralSource,
    now: datetime,
) -> DcapResult:
    """Steps 1-9 for an SGX or TDX quote."""
    sigs = verify_quote_signatures(quote, roots=roots, collateral=collateral, now=now)
    warnings = list(sigs.warnings)
    pck = sigs.pck
    prefix = "tdx" if tee is TeeType.TDX else "sgx"
    signer = tcb_signer(roots=roots, collateral=collateral, now=now, warnings=warnings)

    # Step 7: TCB info for this FMSPC.
    fmspc = pck.fmspc.hex()
    what = f"{prefix}-tcbinfo/{fmspc}"
    info = _signed_document(
        _collateral(collateral, f"{prefix}-tcbinfo", fmspc),
        top="tcbInfo",
        parse=parse_tcb_info,
        signer=signer,
        what=what,
    )
    if info.fmspc != pck.fmspc or info.pce_id != pck.pce_id:
        raise CollateralError(
            f"{what}: for FMSPC {info.fmspc.hex()} / PCE {info.pce_id.hex()}, the PCK "
            f"certificate says {pck.fmspc.hex()} / {pck.pce_id.hex()}",
            reason=Reason.COLLATERAL_MISMATCH,
        )
    if info.id != tee.value.upper():
        raise CollateralError(
            f"{what}: tcbInfo is for {info.id}, the quote is {tee.value}",
            reason=Reason.COLLATERAL_MISMATCH,
        )
    _check_window(info.issue_date, info.next_update, now, what)

    # Step 8: QE identity.
    qe_what = f"{prefix}-qe-identity/default"
    qe_id = _signed_document(
        _collateral(collateral, f"{prefix}-qe-identity", "default"),
        top="enclaveIdentity",
        parse=parse_qe_identity,
        signer=signer,
        what=qe_what,
    )
    wanted_id = "TD_QE" if tee is TeeType.TDX else "QE"
    if qe_id.id != wanted_id:
        raise CollateralError(
            f"{qe_what}: identity {qe_id.id!r}, expected {wanted_id!r}",
            reason=Reason.COLLATERAL_MISMATCH,
        )
    _check_window(qe_id.issue_date, qe_id.next_update, now, qe_what)
    qe: SgxReportBody = quote.certification.qe_report
    if (
        qe.mrsigner != qe_id.mrsigner
        or qe.isv_prod_id != qe_id.isvprodid
        or not _masked_equal(
            qe.miscselect.to_bytes(4, "little"),
            bytes(reversed(qe_id.miscselect)),
            bytes(reversed(qe_id.miscselect_mask)),
        )
        or not _masked_equal(qe.attributes, qe_id.attributes, qe_id.attributes_mask)
    ):
        raise VerificationError(
            f"quoting enclave (mrsigner {qe.mrsigner.hex()}, prod id {qe.isv_prod_id}) is not "
            f"the {wanted_id} named by Intel's QE identity",
            reason=Reason.QE_IDENTITY_MISMATCH,
        )
    qe_level = _first_svn_level(qe_id.levels, qe.isv_svn)
    qe_status = qe_level.status if qe_level else TcbStatus.UNSUPPORTED

    # Step 9: TCB level, TDX module, convergence.
    body = quote.body
    module_status: TcbStatus | None = None
    module_level: SvnLevel | None = None
    tee_tcb_svn: bytes | None = None
    if isinstance(body, TdReportBody):
        tee_tcb_svn = body.tee_tcb_svn
        module_status, module_level = _module_status(info, body)
    level = match_tcb_level(info, pck, tee_tcb_svn)
    platform = level.status if level else TcbStatus.UNSUPPORTED
    status = _converge(platform, qe_status)
    if module_status is not None:
        status = _converge(status, module_status)
    advisories: list[str] = []
    for source in (level, qe_level, module_level):
        for adv in source.advisory_ids if source else ():
            if adv not in advisories:
                advisories.append(adv)
    return DcapResult(
        quote=quote,
        pck=pck,
        pck_certificate=sigs.pck_certificate,
        tcb_status=status,
        platform_status=platform,
        qe_status=qe_status,
        module_status=module_status,
        tcb_date=level.tcb_date if level else None,
        advisory_ids=tuple(advisories),
        tcb_evaluation_number=info.evaluation_number,
        warnings=tuple(warnings),
    )


def trusted_roots(trust_roots: Sequence[Any]) -> tuple[x509.Certificate, ...]:
    roots = tuple(r for r in trust_roots if isinstance(r, x509.Certificate))
    if len(roots) != len(tuple(trust_roots)):
        raise VerificationError(
            "trust anchors for DCAP must be X.509 certificates", reason=Reason.CHAIN_UNTRUSTED_ROOT
        )
    return roots


def common_claims(result: DcapResult) -> dict[str, Any]:
    pck = result.pck
    return {
        "quote_version": result.quote.version,
        "fmspc": pck.fmspc.hex(),
        "pce_id": pck.pce_id.hex(),
        "ppid": pck.ppid.hex(),
        "pck_tcb_components": list(pck.tcb_components),
        "pce_svn": pck.pcesvn,
        "tcb_status": result.tcb_status.value,
        "platform_tcb_status": result.platform_status.value,
        "qe_identity_status": result.qe_status.value,
        "tcb_date": result.tcb_date,
        "tcb_evaluation_data_number": result.tcb_evaluation_number,
        "advisory_ids": list(result.advisory_ids),
        "qe_svn": result.quote.certification.qe_report.isv_svn,
        "pck_serial": f"{result.pck_certificate.serial_number:x}",
    }


__all__ = [
    "SGX_EXTENSIONS_OID",
    "DcapResult",
    "PckExtensions",
    "QeIdentity",
    "QuoteSignatures",
    "TcbInfo",
    "TcbLevel",
    "common_claims",
    "match_tcb_level",
    "parse_pck_extensions",
    "parse_qe_identity",
    "parse_tcb_info",
    "root_crl_key",
    "split_signed_json",
    "tcb_signer",
    "trusted_roots",
    "verify_chain",
    "verify_quote",
    "verify_quote_signatures",
]
