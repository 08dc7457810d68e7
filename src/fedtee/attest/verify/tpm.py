"""TPM 2.0 quote verification, EK certificate chains, and credential activation.

Verification steps (:meth:`TpmVerifier.verify`), each cited where it is checked:

1. Parse the TPMS_ATTEST quote, the TPMT_SIGNATURE and the AK (``fedtee.attest.evidence.tpm``).
2. The AK, when given as TPM2B_PUBLIC, must be a restricted signing key that never left its
   TPM (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign): only such a key
   refuses to sign data that starts with TPM_GENERATED_VALUE, so only the TPM could have
   produced this TPMS_ATTEST. An AK given as bare DER (the Azure vTPM format) cannot be
   checked; the result carries the warning ``ak_attributes_unknown``.
3. The quote signature by the AK (RSASSA / RSAPSS with RSA-2048+, ECDSA with P-256/P-384).
4. The PCR digest recomputed from the supplied PCR values with the signature's hash.
5. The EK certificate, when present, chained to ``trust.roots[TeeType.TPM]`` at ``now``
   through optional intermediates; revocation through collateral kind ``tpm-ek-crl``, key
   = lower-case hex SHA-256 of the issuing CA's DER SubjectPublicKeyInfo (optional: EK CAs
   rarely publish CRLs; the claim ``ek_crl_checked`` says whether one was used).

That the AK lives in the same TPM as the EK is not visible in a quote: it is proven by
credential activation, :class:`TpmChallenge` (see ``fedtee.attest.challenge``).

fedtee's code PCR is :data:`CODE_PCR` (SHA-256 bank): the client resets it and extends it once
with SHA-256 of its code measurement at start, so its value is :func:`code_pcr_value`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from fedtee.attest.challenge import PreparedChallenge
from fedtee.attest.evidence import tpm as ev
from fedtee.attest.model import (
    _SEAL,
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.verify._tpm_credential import EkParams, make_credential
from fedtee.errors import (
    CollateralError,
    EvidenceFormatError,
    Reason,
    VerificationError,
)

# fedtee's code PCR. PCR 23 is the TCG's "application support" PCR: resettable at locality 0,
# so the client can start from zero and the value is the same on every start
# (SHA-256(0^32 || SHA-256(measurement))). The price: code that can talk to the TPM can
# reset it too, so it identifies the code only as far as the OS controls TPM access; pin the
# boot PCRs (0-7) in the policy as well where that matters.
CODE_PCR = 23
PCR_BANK = ev.TPM_ALG_SHA256
CREDENTIAL_BYTES = 32
REPORT_DATA_SIZE = 32  # extraData carries fedtee.attest.binding.report_data(size=32)
MAX_CHAIN_DEPTH = 5
MIN_RSA_BITS = 2048
EK_CRL_KIND = "tpm-ek-crl"

AK_REQUIRED_ATTRIBUTES = (
    ev.ATTR_FIXED_TPM
    | ev.ATTR_FIXED_PARENT
    | ev.ATTR_SENSITIVE_DATA_ORIGIN
    | ev.ATTR_RESTRICTED
    | ev.ATTR_SIGN
)

_CRYPTO_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    ev.TPM_ALG_SHA1: hashes.SHA1,
    ev.TPM_ALG_SHA256: hashes.SHA256,
    ev.TPM_ALG_SHA384: hashes.SHA384,
    ev.TPM_ALG_SHA512: hashes.SHA512,
}
_CURVES: dict[int, ec.EllipticCurve] = {
    ev.TPM_ECC_NIST_P256: ec.SECP256R1(),
    ev.TPM_ECC_NIST_P384: ec.SECP384R1(),
    ev.TPM_ECC_NIST_P521: ec.SECP521R1(),
}

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

# A primary key's Qualified Name is nameAlg || H(hierarchy handle || Name) (Part 1, 16.6),
# so qualifiedSigner tells which hierarchy a primary AK belongs to. It matters for replay
# checks: the TPM obfuscates resetCount / restartCount / firmwareVersion in quotes by keys
# outside the endorsement and platform hierarchies (Part 1, 36.7).
_HIERARCHIES: tuple[tuple[int, str], ...] = (
    (0x4000000B, "endorsement"),
    (0x4000000C, "platform"),
    (0x40000001, "owner"),
)


def ak_hierarchy(ak: ev.TpmPublic, qualified_signer: bytes) -> str:
    """The hierarchy of a primary AK from the quote's qualifiedSigner, else "unknown"."""
    hash_name = ev.HASH_ALGS[ak.name_alg][0]
    for handle, label in _HIERARCHIES:
        qn = (
            ak.name_alg.to_bytes(2, "big")
            + hashlib.new(hash_name, handle.to_bytes(4, "big") + ak.name).digest()
        )
        if hmac.compare_digest(qn, qualified_signer):
            return label
    return "unknown"


def code_pcr_value(measurement: bytes) -> bytes:
    """The SHA-256 value of :data:`CODE_PCR` after reset + one extend with ``measurement``."""
    return hashlib.sha256(bytes(32) + hashlib.sha256(measurement).digest()).digest()


def code_pcr_extend_digest(measurement: bytes) -> bytes:
    """What the attester extends into :data:`CODE_PCR` (SHA-256 of the code measurement)."""
    return hashlib.sha256(measurement).digest()


def spki_der(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_of(pub: ev.TpmPublic) -> PublicKey:
    """A ``cryptography`` key for a parsed TPMT_PUBLIC."""
    try:
        if pub.type == ev.TPM_ALG_RSA:
            n = int.from_bytes(pub.rsa_modulus, "big")
            return rsa.RSAPublicNumbers(pub.rsa_public_exponent, n).public_key()
        return ec.EllipticCurvePublicNumbers(
            int.from_bytes(pub.ecc_x, "big"), int.from_bytes(pub.ecc_y, "big"), _CURVES[pub.curve]
        ).public_key()
    except (ValueError, KeyError) as exc:
        raise EvidenceFormatError(
            f"TPM public key is not a valid key: {exc}", reason=Reason.EVIDENCE_FIELD_INVALID
        ) from exc


def check_ak_attributes(ak: ev.TpmPublic) -> None:
    """Step 2: the AK must be a restricted signing key generated in and bound to its TPM."""
    missing = AK_REQUIRED_ATTRIBUTES & ~ak.attributes
    if missing or ak.has(ev.ATTR_DECRYPT):
        names = [n for bit, n in ev.ATTRIBUTE_NAMES if missing & bit]
        raise VerificationError(
            f"AK attributes {list(ak.attribute_names)} lack {names}"
            + (" and include decrypt" if ak.has(ev.ATTR_DECRYPT) else "")
            + "; an AK must be fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign",
            reason=Reason.AK_ATTRIBUTES_INVALID,
        )


def _verify_signature(key: PublicKey, sig: ev.TpmSignature, message: bytes) -> None:
    """Step 3. SHA-1 and RSA keys under 2048 bits are refused: collisions / factoring
    would let a forger make a body the TPM never signed."""
    if sig.hash_alg == ev.TPM_ALG_SHA1:
        raise VerificationError(
            "quote signed with SHA-1; fedtee accepts SHA-256 or stronger",
            reason=Reason.SIGNATURE_INVALID,
        )
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise VerificationError(
            f"AK is RSA-{key.key_size}; at least RSA-{MIN_RSA_BITS} is required",
            reason=Reason.SIGNATURE_INVALID,
        )
    algo = _CRYPTO_HASHES[sig.hash_alg]()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if sig.sig_alg == ev.TPM_ALG_RSASSA:
                key.verify(sig.rsa_signature, message, padding.PKCS1v15(), algo)
                return
            if sig.sig_alg == ev.TPM_ALG_RSAPSS:
                pss = padding.PSS(mgf=padding.MGF1(algo), salt_length=padding.PSS.AUTO)
                key.verify(sig.rsa_signature, message, pss, algo)
                return
        elif sig.sig_alg == ev.TPM_ALG_ECDSA:
            der = utils.encode_dss_signature(
                int.from_bytes(sig.ecdsa_r, "big"), int.from_bytes(sig.ecdsa_s, "big")
            )
            key.verify(der, message, ec.ECDSA(algo))
            return
    except InvalidSignature:
        raise VerificationError(
            "the quote signature does not verify with the AK", reason=Reason.SIGNATURE_INVALID
        ) from None
    raise VerificationError(
        f"signature algorithm 0x{sig.sig_alg:04x} does not fit the AK's key type",
        reason=Reason.SIGNATURE_INVALID,
    )


def _check_pcr_digest(
    quote: ev.TpmQuote, values: bytes, hash_alg: int
) -> tuple[tuple[ev.PcrSelection, int, bytes], ...]:
    """Step 4."""
    split = ev.split_pcr_values(quote, values)
    digest = hashlib.new(ev.HASH_ALGS[hash_alg][0], values).digest()
    if not hmac.compare_digest(digest, quote.pcr_digest):
        raise VerificationError(
            f"PCR values digest to {digest.hex()}; the quote signed {quote.pcr_digest.hex()}",
            reason=Reason.PCR_DIGEST_MISMATCH,
        )
    return split


# --- EK certificate chain (step 5) ---------------------------------------------------


def _load_cert(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion) as exc:  # InvalidVersion is no ValueError
        raise VerificationError(
            f"{what} is not a DER certificate: {exc}", reason=Reason.CERT_MALFORMED
        ) from exc


def load_chain(pem: bytes) -> tuple[x509.Certificate, ...]:
    """Intermediates as PEM text (aux ``ek_chain``)."""
    if not pem.strip():
        return ()
    try:
        return tuple(x509.load_pem_x509_certificates(pem))
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError(
            f"ek_chain is not PEM certificates: {exc}", reason=Reason.CERT_MALFORMED
        ) from exc


def _check_validity(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(
            f"{what} is valid from {cert.not_valid_before_utc.isoformat()}, "
            f"after {now.isoformat()}",
            reason=Reason.CERT_NOT_YET_VALID,
        )
    if now > cert.not_valid_after_utc:
        raise VerificationError(
            f"{what} expired at {cert.not_valid_after_utc.isoformat()} (now {now.isoformat()})",
            reason=Reason.CERT_EXPIRED,
        )


def _issued_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def cert_key(cert: x509.Certificate, what: str) -> PublicKey:
    """The RSA or EC key of ``cert`` (parsed lazily by ``cryptography``, so errors surface
    here), as a typed error otherwise."""
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"{what} key is malformed: {exc}",
                                reason=Reason.CERT_MALFORMED) from exc  # fmt: skip
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise VerificationError(f"{what} key is neither RSA nor EC", reason=Reason.CERT_MALFORMED)
    return key


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _check_crl(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    collateral: CollateralSource,
    now: datetime,
) -> tuple[bool, tuple[str, ...]]:
    issuer_key = cert_key(issuer, "EK CA certificate")
    key = hashlib.sha256(spki_der(issuer_key)).hexdigest()
    try:
        raw = collateral.get(EK_CRL_KIND, key)
    except CollateralError as exc:
        if exc.reason is Reason.COLLATERAL_MISSING:
            return False, ()
        raise
    try:
        crl = x509.load_der_x509_crl(raw)
    except ValueError as exc:
        raise VerificationError(
            f"EK CA CRL is malformed: {exc}", reason=Reason.CRL_INVALID
        ) from exc
    if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer_key):
        raise VerificationError(
            f"CRL for {issuer.subject.rfc4514_string()} is not signed by it",
            reason=Reason.CRL_INVALID,
        )
    warnings: tuple[str, ...] = ()
    next_update = crl.next_update_utc
    if next_update is not None and now > next_update:
        warnings = (f"crl_stale: EK CA CRL next update was {next_update.isoformat()}",)
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise VerificationError(
            f"certificate serial {cert.serial_number:x} is revoked by "
            f"{issuer.subject.rfc4514_string()}",
            reason=Reason.CERT_REVOKED,
        )
    return True, warnings


@dataclass(frozen=True, kw_only=True)
class EkChainResult:
    anchor: x509.Certificate
    crl_checked: bool
    warnings: tuple[str, ...] = field(default=())


def verify_ek_chain(
    ek_cert: x509.Certificate,
    *,
    intermediates: Sequence[x509.Certificate],
    roots: Sequence[Any],
    collateral: CollateralSource,
    now: datetime,
) -> EkChainResult:
    """Chain ``ek_cert`` to one of ``roots`` (any trusted EK CA, root or not) at ``now``."""
    anchors = [r for r in roots if isinstance(r, x509.Certificate)]
    if not anchors:
        raise VerificationError(
            "no trusted EK CA configured (TrustAnchors.roots[tpm] is empty)",
            reason=Reason.CHAIN_UNTRUSTED_ROOT,
        )
    anchor_prints = {_fingerprint(a) for a in anchors}
    _check_validity(ek_cert, now, "EK certificate")
    current = ek_cert
    crl_checked = False
    warnings: list[str] = []
    for _depth in range(MAX_CHAIN_DEPTH):
        if _fingerprint(current) in anchor_prints:
            return EkChainResult(anchor=current, crl_checked=crl_checked, warnings=tuple(warnings))
        issuer = next((a for a in anchors if _issued_by(current, a)), None)
        if issuer is None:
            issuer = next(
                (
                    i
                    for i in intermediates
                    if i.subject == current.issuer and _issued_by(current, i)
                ),
                None,
            )
            if issuer is None:
                if any(i.subject == current.issuer for i in (*anchors, *intermediates)):
                    raise VerificationError(
                        f"{current.subject.rfc4514_string()} is not signed by the key of its "
                        f"named issuer {current.issuer.rfc4514_string()}",
                        reason=Reason.CHAIN_UNTRUSTED_ROOT,
                    )
                raise VerificationError(
                    f"no trusted EK CA issued {current.subject.rfc4514_string()} "
                    f"(issuer {current.issuer.rfc4514_string()})",
                    reason=Reason.CHAIN_UNTRUSTED_ROOT,
                )
        if not _is_ca(issuer):
            raise VerificationError(
                f"{issuer.subject.rfc4514_string()} is not a CA certificate",
                reason=Reason.CHAIN_INVALID,
            )
        _check_validity(issuer, now, f"EK CA {issuer.subject.rfc4514_string()}")
        checked, crl_warnings = _check_crl(current, issuer, collateral, now)
        crl_checked = crl_checked or checked
        warnings.extend(crl_warnings)
        current = issuer
    raise VerificationError(
        f"EK chain longer than {MAX_CHAIN_DEPTH} certificates", reason=Reason.CHAIN_INVALID
    )


# --- the verifier --------------------------------------------------------------------


def _ak_key(evidence: Evidence) -> tuple[PublicKey, ev.TpmPublic | None]:
    has_tpm2b = "ak_public" in evidence.aux
    has_der = "ak_public_der" in evidence.aux
    if has_tpm2b == has_der:
        raise EvidenceFormatError(
            "TPM evidence needs exactly one of ak_public (TPM2B_PUBLIC) and ak_public_der",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    if has_tpm2b:
        ak = ev.parse_public(evidence.aux["ak_public"])
        return public_key_of(ak), ak
    try:
        key = serialization.load_der_public_key(evidence.aux["ak_public_der"])
    except (ValueError, TypeError) as exc:
        raise EvidenceFormatError(
            f"ak_public_der is not a DER public key: {exc}", reason=Reason.EVIDENCE_FIELD_INVALID
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise EvidenceFormatError(
            "ak_public_der is neither RSA nor EC", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    return key, None


def _require(evidence: Evidence, name: str) -> bytes:
    try:
        return evidence.aux[name]
    except KeyError:
        raise EvidenceFormatError(
            f"TPM evidence lacks {name!r}", reason=Reason.EVIDENCE_FIELD_INVALID
        ) from None


class TpmVerifier:
    """Verifies a TPM 2.0 quote (see the module docstring for the steps)."""

    tee = TeeType.TPM

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
    ) -> VerifiedEvidence:
        if evidence.tee is not TeeType.TPM:
            raise EvidenceFormatError(
                f"TpmVerifier got {evidence.tee.value} evidence",
                reason=Reason.EVIDENCE_TYPE_UNKNOWN,
            )
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        # 1. parse
        ev.check_aux_names(evidence.aux)
        quote = ev.parse_quote(evidence.data)
        sig = ev.parse_signature(_require(evidence, "signature"))
        pcr_values = _require(evidence, "pcrs")
        key, ak = _ak_key(evidence)
        warnings: list[str] = []
        # 2. AK attributes
        if ak is not None:
            check_ak_attributes(ak)
        else:
            warnings.append("ak_attributes_unknown: AK given as bare DER, not TPM2B_PUBLIC")
        # 3. signature, 4. PCR digest
        _verify_signature(key, sig, quote.raw)
        split = _check_pcr_digest(quote, pcr_values, sig.hash_alg)
        # 5. EK chain
        claims: dict[str, Any] = {}
        platform_id: bytes | None = None
        if "ek_cert" in evidence.aux:
            ek_cert = _load_cert(evidence.aux["ek_cert"], "EK certificate")
            chain = verify_ek_chain(
                ek_cert,
                intermediates=load_chain(evidence.aux.get("ek_chain", b"")),
                roots=trust.roots_for(TeeType.TPM),
                collateral=collateral,
                now=now,
            )
            platform_id = hashlib.sha256(spki_der(cert_key(ek_cert, "EK certificate"))).digest()
            warnings.extend(chain.warnings)
            claims.update(
                ek_verified=True,
                ek_subject=ek_cert.subject.rfc4514_string(),
                ek_issuer=ek_cert.issuer.rfc4514_string(),
                ek_ca=chain.anchor.subject.rfc4514_string(),
                ek_crl_checked=chain.crl_checked,
            )
        else:
            claims["ek_verified"] = False
            warnings.append("ek_cert_absent: the AK is not tied to a certified TPM")

        measurements = {
            (f"pcr{i}" if bank.hash_alg == PCR_BANK else f"pcr{i}.{bank.hash_name}"): value
            for bank, i, value in split
        }
        code = measurements.get(f"pcr{CODE_PCR}")
        if code is None:
            raise EvidenceFormatError(
                f"the quote does not cover fedtee's code PCR {CODE_PCR} in the SHA-256 bank",
                reason=Reason.EVIDENCE_FIELD_INVALID,
            )
        clock = quote.clock_info
        claims.update(
            extra_data=quote.extra_data.hex(),
            qualified_signer=quote.qualified_signer.hex(),
            clock=clock.clock,
            reset_count=clock.reset_count,
            restart_count=clock.restart_count,
            safe=clock.safe,
            firmware_version=f"0x{quote.firmware_version:016x}",
            pcr_select={s.hash_name: list(s.pcrs) for s in quote.pcr_selections},
            pcr_digest=quote.pcr_digest.hex(),
            pcrs={k: v.hex() for k, v in measurements.items()},
            ak_spki_sha256=hashlib.sha256(spki_der(key)).hexdigest(),
        )
        if ak is not None:
            claims["ak_name"] = ak.name.hex()
            claims["ak_hierarchy"] = ak_hierarchy(ak, quote.qualified_signer)
        return VerifiedEvidence(
            tee=TeeType.TPM,
            report_data=quote.extra_data,
            measurements=measurements,
            debug=False,
            platform_id=platform_id,
            code_identity=code,
            tcb_status=TcbStatus.NOT_APPLICABLE,
            svns={"reset_count": clock.reset_count, "restart_count": clock.restart_count},
            hardware_backed=True,
            claims=claims,
            verified_at=now,
            warnings=tuple(warnings),
            seal=_SEAL,
        )


def check_counters(previous_claims: Mapping[str, Any], current_claims: Mapping[str, Any]) -> None:
    """Raise ``TPM_RESET`` unless ``current`` comes from the same TPM power cycle as before.

    Both are ``VerifiedEvidence.claims`` of quotes by the same AK. A changed resetCount
    (TPM reset or clear) or restartCount (TPM restart / resume), or a clock that went back,
    means the platform state the earlier quote vouched for may be gone (PCRs reset, code
    PCR re-extended by anything), so the client must attest afresh. Counters are exact only
    for AKs in the endorsement or platform hierarchy (claim ``ak_hierarchy``; fedtee's
    attester makes such AKs); other AKs' counters are obfuscated per key, so comparing two
    AKs' quotes then reads as a reset: conservative, never a silent pass.
    """
    try:
        before = (int(previous_claims["reset_count"]), int(previous_claims["restart_count"]))
        after = (int(current_claims["reset_count"]), int(current_claims["restart_count"]))
        clock_before, clock_after = int(previous_claims["clock"]), int(current_claims["clock"])
    except (KeyError, TypeError, ValueError) as exc:
        raise VerificationError(
            f"TPM claims lack counters: {exc}", reason=Reason.TPM_RESET
        ) from exc
    if before != after:
        raise VerificationError(
            f"TPM reset/restart counters went from {before} to {after}",
            reason=Reason.TPM_RESET,
        )
    if clock_after < clock_before:
        raise VerificationError(
            f"TPM clock went back from {clock_before} to {clock_after}", reason=Reason.TPM_RESET
        )


# --- credential activation (ChallengeExtension) ---------------------------------------

# Standard EK templates (TCG EK Credential Profile 2.3, B.3): key type -> (nameAlg, AES bits),
# used when the client sends only its EK certificate.
_EK_DEFAULTS: dict[tuple[str, int], tuple[str, int]] = {
    ("rsa", 2048): ("sha256", 128),
    ("rsa", 3072): ("sha384", 256),
    ("rsa", 4096): ("sha384", 256),
    ("ecc", 256): ("sha256", 128),
    ("ecc", 384): ("sha384", 256),
    ("ecc", 521): ("sha512", 256),
}


def _ek_params_from_key(key: PublicKey) -> EkParams:
    kind = "rsa" if isinstance(key, rsa.RSAPublicKey) else "ecc"
    name_alg, bits = _EK_DEFAULTS.get((kind, key.key_size), ("", 0))
    if not name_alg:
        raise VerificationError(
            f"EK {kind}-{key.key_size} has no standard template", reason=Reason.CERT_MALFORMED
        )
    return EkParams(public_key=key, name_alg=name_alg, sym_bits=bits)


def _ek_params_from_public(pub: ev.TpmPublic) -> EkParams:
    if not (pub.has(ev.ATTR_RESTRICTED) and pub.has(ev.ATTR_DECRYPT)) or pub.has(ev.ATTR_SIGN):
        raise VerificationError(
            f"EK attributes {list(pub.attribute_names)}: an EK is a restricted decryption key",
            reason=Reason.AK_NOT_BOUND,
        )
    if pub.symmetric.algorithm != ev.TPM_ALG_AES:
        raise VerificationError("EK has no AES symmetric definition", reason=Reason.AK_NOT_BOUND)
    return EkParams(
        public_key=public_key_of(pub),
        name_alg=ev.HASH_ALGS[pub.name_alg][0],
        sym_bits=pub.symmetric.key_bits,
    )


@dataclass(frozen=True)
class TpmChallenge:
    """Binds the AK to the EK by TPM2_MakeCredential / TPM2_ActivateCredential.

    ``prepare``'s request aux: ``"ak_public"`` (TPM2B_PUBLIC), and ``"ek_cert"`` (DER, chained
    to ``trust.roots[tpm]``) with optional ``"ek_chain"`` (PEM intermediates) and
    ``"ek_public"`` (TPM2B_PUBLIC, must match the certificate; gives the EK's exact
    parameters), or ``"ek_public"`` alone only when ``allow_uncertified_ek`` is set.
    ``to_client``: ``credential_blob`` (TPM2B_ID_OBJECT), ``encrypted_secret``
    (TPM2B_ENCRYPTED_SECRET). ``kept``: ``ak_name``, ``secret``, ``ek_public_hash``
    (SHA-256 of the EK's DER SubjectPublicKeyInfo, equal to ``VerifiedEvidence.platform_id``).
    ``check`` wants evidence aux ``activated_secret``.
    """

    allow_uncertified_ek: bool = False

    def prepare(
        self,
        *,
        nonce: bytes,
        request: Mapping[str, bytes],
        trust: TrustAnchors,
        now: datetime,
        collateral: CollateralSource | None = None,
    ) -> PreparedChallenge:
        del nonce  # the secret is fresh on its own; the nonce is bound by the quote
        if "ak_public" not in request:
            raise EvidenceFormatError(
                "TPM challenge request lacks ak_public", reason=Reason.EVIDENCE_FIELD_INVALID
            )
        ak = ev.parse_public(request["ak_public"])
        check_ak_attributes(ak)
        ek_pub = ev.parse_public(request["ek_public"]) if "ek_public" in request else None
        if "ek_cert" in request:
            cert = _load_cert(request["ek_cert"], "EK certificate")
            verify_ek_chain(
                cert,
                intermediates=load_chain(request.get("ek_chain", b"")),
                roots=trust.roots_for(TeeType.TPM),
                collateral=collateral if collateral is not None else _NoCollateral(),
                now=now,
            )
            ek_key = cert_key(cert, "EK certificate")
            if ek_pub is not None:
                params = _ek_params_from_public(ek_pub)
                if spki_der(params.public_key) != spki_der(ek_key):
                    raise VerificationError(
                        "ek_public is not the key in the EK certificate",
                        reason=Reason.AK_NOT_BOUND,
                    )
            else:
                params = _ek_params_from_key(ek_key)
        elif ek_pub is not None and self.allow_uncertified_ek:
            params = _ek_params_from_public(ek_pub)
        else:
            raise VerificationError(
                "TPM challenge request has no EK certificate; an uncertified EK is not trusted",
                reason=Reason.CHAIN_UNTRUSTED_ROOT,
            )
        secret = os.urandom(CREDENTIAL_BYTES)
        cred = make_credential(ek=params, name=ak.name, credential=secret)
        return PreparedChallenge(
            to_client={
                "credential_blob": cred.credential_blob,
                "encrypted_secret": cred.encrypted_secret,
            },
            kept={
                "ak_name": ak.name,
                "secret": secret,
                "ek_public_hash": hashlib.sha256(spki_der(params.public_key)).digest(),
            },
        )

    def check(
        self, *, evidence: Evidence, verified: VerifiedEvidence, kept: Mapping[str, bytes]
    ) -> None:
        try:
            secret, ak_name, ek_hash = kept["secret"], kept["ak_name"], kept["ek_public_hash"]
        except KeyError as exc:
            raise VerificationError(
                f"challenge state lacks {exc}", reason=Reason.AK_NOT_BOUND
            ) from exc
        answered = evidence.aux.get("activated_secret", b"")
        if not hmac.compare_digest(answered, secret):
            raise VerificationError(
                "the TPM did not recover the credential: the AK is not bound to this EK",
                reason=Reason.AK_NOT_BOUND,
            )
        if "ak_public" not in evidence.aux:
            raise VerificationError("evidence lacks ak_public", reason=Reason.AK_NOT_BOUND)
        quoted_ak = ev.parse_public(evidence.aux["ak_public"]).name
        if not hmac.compare_digest(quoted_ak, ak_name):
            raise VerificationError(
                f"the quote's AK {quoted_ak.hex()} is not the activated AK {ak_name.hex()}",
                reason=Reason.AK_NOT_BOUND,
            )
        if verified.platform_id is not None and not hmac.compare_digest(
            verified.platform_id, ek_hash
        ):
            raise VerificationError(
                "the evidence's EK is not the EK the credential was made for",
                reason=Reason.AK_NOT_BOUND,
            )


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(
            f"no collateral source for {kind}/{key}", reason=Reason.COLLATERAL_MISSING
        )


__all__ = [
    "CODE_PCR",
    "ak_hierarchy",
    "REPORT_DATA_SIZE",
    "EkChainResult",
    "TpmChallenge",
    "TpmVerifier",
    "check_ak_attributes",
    "check_counters",
    "code_pcr_extend_digest",
    "code_pcr_value",
    "load_chain",
    "public_key_of",
    "spki_der",
    "verify_ek_chain",
]
