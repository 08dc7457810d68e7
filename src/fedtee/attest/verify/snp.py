"""AMD SEV-SNP verification: report signature, VCEK -> ASK -> ARK chain, VCEK TCB binding.

Steps (each check below cites its step):

1. Parse the report (:mod:`fedtee.attest.evidence.snp`): size, version 2..5, reserved
   bytes zero, signature_algo 1 (ECDSA P-384 / SHA-384).
2. Find the signing certificate: the certificate table's VCEK (or VLEK when the report's
   SIGNING_KEY says so) in aux ``"certs"``, else aux ``"vcek"`` (DER), else collateral.
   AMD KDS issues VCEKs with a serial number of 0, which RFC 5280 forbids; ``cryptography``
   warns on such certificates, so they are loaded with that one warning silenced.
3. Chain: the VCEK is signed (RSA-PSS SHA-384) by an ASK, the ASK by a trusted ARK, and the
   ARK is self-signed. ASK candidates: the certificate table's ASK, then the embedded ASKs
   (:func:`fedtee.attest.trust.amd.intermediates`). An ARK in the certificate table must be
   byte-identical to a trusted root. Every certificate must be valid at ``now``.
4. Revocation (optional): collateral ``snp-crl``/<product> is the ARK-signed CRL AMD KDS
   publishes; when present its signature must verify with the chain's ARK, and neither the
   ASK nor the VCEK may be listed. A CRL past its nextUpdate gives a ``crl_stale`` warning.
5. TCB binding: the VCEK's SPL extensions (OIDs 1.3.6.1.4.1.3704.1.3.1 blSPL, .2 teeSPL,
   .3 snpSPL, .8 ucodeSPL, .9 fmcSPL on Turin) must equal the report's reported_tcb, and its
   hwID (1.3.6.1.4.1.3704.1.4) must equal chip_id (skipped when MASK_CHIP_ID is set, and for
   a VLEK, which names no chip).
6. Report signature: ECDSA P-384 over bytes 0x000..0x29F with the VCEK's key.

Collateral read (``CollateralSource.get(kind, key)``):

==============  =====================================================  ==========================
kind            key                                                    content
==============  =====================================================  ==========================
``snp-vcek``    ``<Product>/<chip_id hex>/<reported_tcb hex>``         VCEK, DER (when the
                (product ``Milan``/``Genoa``/``Turin``; all three      evidence carries none)
                are tried for a version 2 report)
``snp-crl``     ``<Product>``                                          ARK-signed CRL, DER
                                                                       (optional)
==============  =====================================================  ==========================

The TCB status is ``UpToDate`` when the VCEK's TCB matches: the VCEK proves what TCB the
firmware reported, and policies require minimum ``tcb.*`` SVNs.

Chain signatures are cached per process by the SHA-256 fingerprints of the certificates
involved; validity periods are re-checked against ``now`` on every call, so the cache never
changes an outcome.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from fedtee.attest.evidence import snp as snp_format
from fedtee.attest.evidence.snp import Product, SigningKey, SnpReport
from fedtee.attest.model import (
    _SEAL,
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.trust import amd
from fedtee.errors import CollateralError, Reason, VerificationError

_AMD_OID: Final = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME: Final = f"{_AMD_OID}.2"
OID_HWID: Final = f"{_AMD_OID}.4"
# TCB part -> SPL extension OID.
OID_SPL: Final = {
    "bootloader": f"{_AMD_OID}.3.1",
    "tee": f"{_AMD_OID}.3.2",
    "snp": f"{_AMD_OID}.3.3",
    "microcode": f"{_AMD_OID}.3.8",
    "fmc": f"{_AMD_OID}.3.9",
}
_PSS_SALT: Final = 48  # AMD signs with RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt


def load_amd_certificate(der: bytes, what: str) -> x509.Certificate:
    """Load a DER certificate, tolerating AMD KDS's zero serial number (step 2)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", category=CryptographyDeprecationWarning, message=".*serial number.*"
            )
            cert = x509.load_der_x509_certificate(der)
            # Touch the serial inside the guard: cryptography parses it lazily.
            _ = cert.serial_number
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise VerificationError(
            f"{what} is not a DER certificate: {exc}", reason=Reason.CERT_MALFORMED
        ) from exc
    outer, inner = _signature_algorithms(der, what)
    if outer != inner:
        # RFC 5280 4.1.1.2: the two must be equal. Only the inner one is signed, so an outer
        # one that differs would be an unsigned, malleable part of the certificate.
        raise VerificationError(
            f"{what}'s signatureAlgorithm differs from its TBS signature field",
            reason=Reason.CERT_MALFORMED,
        )
    return cert


def _tlv(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """(content start, element end) of the DER element at ``pos``, within ``end``."""
    if pos + 2 > end:
        raise VerificationError(f"{what}: truncated DER", reason=Reason.CERT_MALFORMED)
    first = data[pos + 1]
    if first < 0x80:
        start, length = pos + 2, first
    else:
        n = first & 0x7F
        if not 1 <= n <= 3 or pos + 2 + n > end:
            raise VerificationError(f"{what}: bad DER length", reason=Reason.CERT_MALFORMED)
        start, length = pos + 2 + n, int.from_bytes(data[pos + 2 : pos + 2 + n], "big")
    if start + length > end:
        raise VerificationError(f"{what}: DER element overruns", reason=Reason.CERT_MALFORMED)
    return start, start + length


def _signature_algorithms(der: bytes, what: str) -> tuple[bytes, bytes]:
    """(outer signatureAlgorithm, TBS signature) DER of a certificate already parsed once."""
    cert_start, cert_end = _tlv(der, 0, len(der), what)
    tbs_start, tbs_end = _tlv(der, cert_start, cert_end, what)
    _, alg_end = _tlv(der, tbs_end, cert_end, what)
    outer = der[tbs_end:alg_end]
    pos = tbs_start
    if der[pos] == 0xA0:  # explicit version
        pos = _tlv(der, pos, tbs_end, what)[1]
    pos = _tlv(der, pos, tbs_end, what)[1]  # serialNumber
    inner = der[pos : _tlv(der, pos, tbs_end, what)[1]]
    return outer, inner


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


# (child fp, issuer fp) pairs whose signature verified; only true results are cached.
_SIGNED: set[tuple[bytes, bytes]] = set()
_SIGNED_MAX: Final = 4096
# VCEK fingerprint -> (public key, parsed extensions).
_VCEK_INFO: dict[bytes, tuple[ec.EllipticCurvePublicKey, dict[str, Any]]] = {}


def _pss_signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer``'s RSA key made ``child``'s RSA-PSS SHA-384 signature (step 3)."""
    key = (_fingerprint(child), _fingerprint(issuer))
    if key in _SIGNED:
        return True
    if child.issuer != issuer.subject:
        return False
    try:
        public = issuer.public_key()  # parsed lazily: a mangled key raises only here
    except (ValueError, UnsupportedAlgorithm):
        return False  # an unreadable key signed nothing
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    if child.signature_algorithm_oid != x509.SignatureAlgorithmOID.RSASSA_PSS:
        return False
    try:
        algo = child.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return False
    if not isinstance(algo, hashes.SHA384):
        return False
    try:
        public.verify(
            child.signature,
            child.tbs_certificate_bytes,
            padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=_PSS_SALT),
            hashes.SHA384(),
        )
    except InvalidSignature:
        return False
    if len(_SIGNED) >= _SIGNED_MAX:
        _SIGNED.clear()
    _SIGNED.add(key)
    return True


def _check_time(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(
            f"{what} is not valid before {cert.not_valid_before_utc.isoformat()} (now {now})",
            reason=Reason.CERT_NOT_YET_VALID,
        )
    if now > cert.not_valid_after_utc:
        raise VerificationError(
            f"{what} expired at {cert.not_valid_after_utc.isoformat()} (now {now})",
            reason=Reason.CERT_EXPIRED,
        )


def _der_small(value: bytes, tag: int, what: str) -> bytes:
    """Content of a short-form DER TLV with ``tag``; AMD's extensions are all < 128 bytes."""
    if len(value) < 2 or value[0] != tag or value[1] >= 0x80 or len(value) != 2 + value[1]:
        raise VerificationError(
            f"VCEK extension {what} is not a short DER value", reason=Reason.CERT_MALFORMED
        )
    return value[2:]


def _der_uint(value: bytes, what: str) -> int:
    body = _der_small(value, 0x02, what)
    if not body or body[0] & 0x80:
        raise VerificationError(
            f"VCEK extension {what} is not a non-negative INTEGER", reason=Reason.CERT_MALFORMED
        )
    return int.from_bytes(body, "big")


def _vcek_extensions(cert: x509.Certificate) -> dict[str, Any]:
    raw: dict[str, bytes] = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            raw[ext.oid.dotted_string] = ext.value.value
    out: dict[str, Any] = {}
    if OID_PRODUCT_NAME in raw:
        try:
            out["product_name"] = _der_small(raw[OID_PRODUCT_NAME], 0x16, "productName").decode(
                "ascii"
            )
        except UnicodeDecodeError as exc:
            raise VerificationError(
                "VCEK productName is not ASCII", reason=Reason.CERT_MALFORMED
            ) from exc
    if OID_HWID in raw:
        out["hwid"] = raw[OID_HWID]
    spl: dict[str, int] = {}
    for part, oid in OID_SPL.items():
        if oid in raw:
            spl[part] = _der_uint(raw[oid], part)
    out["spl"] = spl
    return out


def _vcek_info(cert: x509.Certificate) -> tuple[ec.EllipticCurvePublicKey, dict[str, Any]]:
    fp = _fingerprint(cert)
    hit = _VCEK_INFO.get(fp)
    if hit is not None:
        return hit
    try:
        public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(
            f"VCEK key is unreadable: {exc}", reason=Reason.CERT_MALFORMED
        ) from exc
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP384R1
    ):
        raise VerificationError("VCEK key is not ECDSA P-384", reason=Reason.CERT_MALFORMED)
    info = (public, _vcek_extensions(cert))
    if len(_VCEK_INFO) >= _SIGNED_MAX:
        _VCEK_INFO.clear()
    _VCEK_INFO[fp] = info
    return info


@dataclass(frozen=True)
class _Chain:
    vcek: x509.Certificate
    ask: x509.Certificate
    ark: x509.Certificate


def _collateral_vcek(report: SnpReport, collateral: CollateralSource) -> bytes:
    products = [report.product] if report.product is not None else list(Product)
    tried = []
    for product in products:
        key = f"{product.value}/{report.chip_id.hex()}/{report.reported_tcb_raw.hex()}"
        tried.append(key)
        try:
            return collateral.get("snp-vcek", key)
        except CollateralError as exc:
            if exc.reason is not Reason.COLLATERAL_MISSING:
                raise
    raise CollateralError(
        f"no VCEK in the evidence and none in collateral snp-vcek/{{{', '.join(tried)}}}",
        reason=Reason.COLLATERAL_MISSING,
    )


def _signing_cert_der(
    report: SnpReport, evidence: Evidence, collateral: CollateralSource
) -> tuple[bytes, snp_format.CertTable | None]:
    """Step 2."""
    if report.signing_key is SigningKey.NONE:
        raise VerificationError(
            "report is unsigned (SIGNING_KEY = none)", reason=Reason.SIGNATURE_INVALID
        )
    table = snp_format.parse_cert_table(evidence.aux["certs"]) if "certs" in evidence.aux else None
    name = report.signing_key.value
    if table is not None and table.get(name) is not None:
        der = table.get(name)
        assert der is not None
        return der, table
    if "vcek" in evidence.aux:
        return evidence.aux["vcek"], table
    if report.signing_key is SigningKey.VLEK:
        raise CollateralError(
            "report is signed by a VLEK but the evidence carries none",
            reason=Reason.COLLATERAL_MISSING,
        )
    return _collateral_vcek(report, collateral), table


def _build_chain(
    vcek: x509.Certificate,
    table: snp_format.CertTable | None,
    roots: Sequence[x509.Certificate],
    now: datetime,
) -> _Chain:
    """Step 3."""
    if not roots:
        raise VerificationError(
            "no trusted AMD ARK in the trust anchors", reason=Reason.CHAIN_UNTRUSTED_ROOT
        )
    if table is not None and table.get("ark") is not None:
        ark_der = table.get("ark")
        if all(r.public_bytes(serialization.Encoding.DER) != ark_der for r in roots):
            raise VerificationError(
                "the evidence's ARK is not a trusted AMD root", reason=Reason.CHAIN_UNTRUSTED_ROOT
            )
    candidates: list[x509.Certificate] = []
    if table is not None and table.get("ask") is not None:
        ask_der = table.get("ask")
        assert ask_der is not None
        candidates.append(load_amd_certificate(ask_der, "ASK"))
    candidates.extend(amd.intermediates())
    asks = [a for a in candidates if _pss_signed_by(vcek, a)]
    if not asks:
        raise VerificationError(
            f"VCEK (issuer {vcek.issuer.rfc4514_string()}) is not signed by any known ASK",
            reason=Reason.CHAIN_INVALID,
        )
    for ask in asks:
        for ark in roots:
            if _pss_signed_by(ask, ark) and _pss_signed_by(ark, ark):
                chain = _Chain(vcek=vcek, ask=ask, ark=ark)
                _check_time(ark, now, "ARK")
                _check_time(ask, now, "ASK")
                _check_time(vcek, now, "VCEK")
                return chain
    raise VerificationError(
        f"ASK {asks[0].subject.rfc4514_string()} does not chain to a trusted, self-signed ARK",
        reason=Reason.CHAIN_UNTRUSTED_ROOT,
    )


def _check_crl(
    chain: _Chain, product: Product | None, collateral: CollateralSource, now: datetime
) -> list[str]:
    """Step 4."""
    names = (
        [product.value]
        if product is not None
        else [
            p.value
            for p in Product
            if chain.ark.subject.rfc4514_string().find(f"ARK-{p.value}") >= 0
        ]
    )
    warnings_out: list[str] = []
    for name in names:
        try:
            der = collateral.get("snp-crl", name)
        except CollateralError as exc:
            if exc.reason is Reason.COLLATERAL_MISSING:
                continue
            raise
        try:
            crl = x509.load_der_x509_crl(der)
            # Parse the lazily decoded parts now, so a malformed field fails here, typed.
            _ = (crl.issuer, crl.next_update_utc, [r.serial_number for r in crl])
        except ValueError as exc:
            raise CollateralError(
                f"snp-crl/{name} is not a DER CRL", reason=Reason.CRL_INVALID
            ) from exc
        try:
            public = chain.ark.public_key()
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CollateralError(
                f"snp-crl/{name}: the chain's ARK key is unreadable", reason=Reason.CRL_INVALID
            ) from exc
        if crl.issuer != chain.ark.subject or not isinstance(public, rsa.RSAPublicKey):
            raise CollateralError(
                f"snp-crl/{name} is not issued by the chain's ARK", reason=Reason.CRL_INVALID
            )
        try:
            public.verify(
                crl.signature,
                crl.tbs_certlist_bytes,
                padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=_PSS_SALT),
                hashes.SHA384(),
            )
        except InvalidSignature as exc:
            raise CollateralError(
                f"snp-crl/{name} signature does not verify with the ARK", reason=Reason.CRL_INVALID
            ) from exc
        for what, cert in (("ASK", chain.ask), ("VCEK", chain.vcek)):
            if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
                raise VerificationError(
                    f"{what} serial {cert.serial_number} is revoked", reason=Reason.CERT_REVOKED
                )
        next_update = crl.next_update_utc
        if next_update is not None and next_update < now:
            warnings_out.append(f"crl_stale: snp-crl/{name} nextUpdate {next_update.isoformat()}")
    return warnings_out


def _check_tcb(
    report: SnpReport, info: dict[str, Any], product: Product | None, signer: SigningKey
) -> None:
    """Step 5."""
    reported = report.tcb("reported", product)
    spl: dict[str, int] = info["spl"]
    parts = {
        "bootloader": reported.bootloader,
        "tee": reported.tee,
        "snp": reported.snp,
        "microcode": reported.microcode,
    }
    if reported.fmc is not None:
        parts["fmc"] = reported.fmc
    for part, value in parts.items():
        if part not in spl:
            raise VerificationError(
                f"VCEK has no {part} SPL extension ({OID_SPL[part]})", reason=Reason.CERT_MALFORMED
            )
        if spl[part] != value:
            raise VerificationError(
                f"VCEK {part} SPL is {spl[part]} but the report's reported_tcb {part} is {value}",
                reason=Reason.TCB_MISMATCH,
            )
    if signer is SigningKey.VCEK and not report.mask_chip_id:
        hwid = info.get("hwid")
        if hwid is None:
            raise VerificationError("VCEK has no hwID extension", reason=Reason.CERT_MALFORMED)
        if hwid != report.chip_id:
            raise VerificationError(
                f"VCEK hwID {hwid.hex()[:16]}... is not the report's chip_id "
                f"{report.chip_id.hex()[:16]}...",
                reason=Reason.TCB_MISMATCH,
            )


def _check_signature(report: SnpReport, key: ec.EllipticCurvePublicKey) -> None:
    """Step 6."""
    r = int.from_bytes(report.signature_r, "little")
    s = int.from_bytes(report.signature_s, "little")
    try:
        key.verify(encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise VerificationError(
            "SNP report signature does not verify with the VCEK", reason=Reason.SIGNATURE_INVALID
        ) from exc


@dataclass(frozen=True)
class _ChainEntry:
    chain: _Chain
    key: ec.EllipticCurvePublicKey
    info: dict[str, Any]
    vcek_claims: dict[str, Any]
    ark_name: str


# (VCEK DER digest, table ASK/ARK digest, trusted roots) -> verified chain. Only successes are
# cached, and validity periods are re-checked by the caller, so a hit never changes an outcome.
_CHAINS: dict[tuple[bytes, bytes, tuple[x509.Certificate, ...]], _ChainEntry] = {}


def _verified_chain(
    report: SnpReport,
    der: bytes,
    table: snp_format.CertTable | None,
    roots: tuple[x509.Certificate, ...],
    now: datetime,
) -> _ChainEntry:
    """Step 3, cached by the SHA-256 of the certificates involved."""
    extra = b"" if table is None else (table.get("ask") or b"") + b"|" + (table.get("ark") or b"")
    cache_key = (hashlib.sha256(der).digest(), hashlib.sha256(extra).digest(), roots)
    hit = _CHAINS.get(cache_key)
    if hit is not None:
        return hit
    vcek = load_amd_certificate(der, report.signing_key.value.upper())
    try:
        chain = _build_chain(vcek, table, roots, now)
        key, info = _vcek_info(vcek)
    except ValueError as exc:
        # cryptography decodes names, extensions and keys lazily and raises ValueError on
        # malformed ones; that is a malformed certificate, not a crash.
        raise VerificationError(
            f"a certificate of the VCEK chain is malformed: {exc}", reason=Reason.CERT_MALFORMED
        ) from exc
    entry = _ChainEntry(
        chain=chain,
        key=key,
        info=info,
        vcek_claims={
            "subject": vcek.subject.rfc4514_string(),
            "product_name": info.get("product_name"),
            "sha256": _fingerprint(vcek).hex(),
        },
        ark_name=chain.ark.subject.rfc4514_string(),
    )
    if len(_CHAINS) >= _SIGNED_MAX:
        _CHAINS.clear()
    _CHAINS[cache_key] = entry
    return entry


class SnpVerifier:
    """Verifier for ``sev-snp`` evidence (see the module docstring for the steps)."""

    tee = TeeType.SEV_SNP

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
    ) -> VerifiedEvidence:
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        report = snp_format.report_for(evidence)  # step 1
        der, table = _signing_cert_der(report, evidence, collateral)  # step 2
        roots = tuple(
            r for r in trust.roots_for(TeeType.SEV_SNP) if isinstance(r, x509.Certificate)
        )
        entry = _verified_chain(report, der, table, roots, now)  # step 3
        chain, key, info = entry.chain, entry.key, entry.info
        for what, cert in (("ARK", chain.ark), ("ASK", chain.ask), ("VCEK", chain.vcek)):
            _check_time(cert, now, what)  # re-checked on every call, cached or not
        product = report.product
        named = snp_format.product_from_name(str(info.get("product_name", "")))
        if product is not None and named is not None and named is not product:
            # The TCB layout depends on the product: a VCEK of another product line cannot
            # vouch for this report's TCB.
            raise VerificationError(
                f"report CPUID names {product.value} but the VCEK is for {named.value}",
                reason=Reason.TCB_MISMATCH,
            )
        product = product or named
        warnings_out = _check_crl(chain, product, collateral, now)  # step 4
        _check_tcb(report, info, product, report.signing_key)  # step 5
        _check_signature(report, key)  # step 6
        reported = report.tcb("reported", product)
        claims = snp_format.describe_report(report, product)
        claims["vcek"] = dict(entry.vcek_claims)
        claims["ark"] = entry.ark_name
        return VerifiedEvidence(
            tee=TeeType.SEV_SNP,
            report_data=report.report_data,
            measurements={
                "measurement": report.measurement,
                "host_data": report.host_data,
                "id_key_digest": report.id_key_digest,
            },
            debug=report.policy.debug,
            platform_id=None if report.mask_chip_id else report.chip_id,
            code_identity=report.measurement,
            tcb_status=TcbStatus.UP_TO_DATE,
            svns={"guest_svn": report.guest_svn, **reported.svns()},
            hardware_backed=True,
            claims=claims,
            verified_at=now,
            warnings=tuple(warnings_out),
            seal=_SEAL,
        )


__all__ = ["OID_HWID", "OID_PRODUCT_NAME", "OID_SPL", "SnpVerifier", "load_amd_certificate"]
