"""Verify simulated-TEE evidence: same steps as hardware, software roots.

1. Parse the report (``fedtee.attest.evidence.sim``) and its platform certificate.
2. The platform certificate must be issued and signed by a sim root in the trust anchors
   and valid at ``now`` (CHAIN_UNTRUSTED_ROOT / CERT_EXPIRED / CERT_NOT_YET_VALID); it must
   be an end-entity (not CA) certificate for a P-256 key (CHAIN_INVALID / CERT_MALFORMED).
3. The report's platform_id must be the hash of that certificate's key (KEY_NOT_BOUND).
4. The report signature must verify with the platform key (SIGNATURE_INVALID).

The result is marked ``hardware_backed=False`` and warns that it is simulated.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fedtee.attest.evidence.sim import check_aux, parse_report
from fedtee.attest.model import (
    _SEAL,
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.errors import EvidenceFormatError, Reason, VerificationError

SIMULATED_WARNING = "simulated: not hardware-backed"


def _check_validity(cert: x509.Certificate, now: dt.datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise VerificationError(
            f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}",
            reason=Reason.CERT_NOT_YET_VALID,
        )
    if now > cert.not_valid_after_utc:
        raise VerificationError(
            f"{what} expired at {cert.not_valid_after_utc.isoformat()}",
            reason=Reason.CERT_EXPIRED,
        )


class SimVerifier:
    tee = TeeType.SIM

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: dt.datetime,
    ) -> VerifiedEvidence:
        if evidence.tee != TeeType.SIM:
            raise EvidenceFormatError(
                f"SimVerifier got {evidence.tee} evidence", reason=Reason.EVIDENCE_TYPE_UNKNOWN
            )
        # 1. parse
        report = parse_report(evidence.data)
        try:
            # cryptography parses some fields lazily: touch every one used below here, so a
            # malformed certificate fails as CERT_MALFORMED and never later as a ValueError.
            cert = x509.load_der_x509_certificate(check_aux(evidence.aux))
            platform_key = cert.public_key()
            cert_issuer = cert.issuer
            cert_subject = cert.subject.rfc4514_string()
            constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound as exc:
            raise VerificationError(
                "sim platform certificate lacks BasicConstraints", reason=Reason.CERT_MALFORMED
            ) from exc
        except (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
            # InvalidVersion is not a ValueError: a version field other than v1/v3 raises it.
            raise VerificationError(
                f"sim platform certificate is malformed: {exc}", reason=Reason.CERT_MALFORMED
            ) from exc
        if not isinstance(platform_key, ec.EllipticCurvePublicKey) or not isinstance(
            platform_key.curve, ec.SECP256R1
        ):
            raise VerificationError(
                "sim platform key is not an ECDSA P-256 key", reason=Reason.CERT_MALFORMED
            )
        if constraints.ca:
            # A CA certificate is an issuer, not a platform: its key must not sign reports.
            raise VerificationError(
                "sim platform certificate is a CA certificate", reason=Reason.CHAIN_INVALID
            )
        # 2. chain to a trusted sim root
        roots = [r for r in trust.roots_for(TeeType.SIM) if r.subject == cert_issuer]
        issuer = None
        for root in roots:
            try:
                cert.verify_directly_issued_by(root)
            except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
                continue
            issuer = root
            break
        if issuer is None:
            raise VerificationError(
                "sim platform certificate is not issued by a trusted sim root "
                f"(issuer {cert.issuer.rfc4514_string()}); pass the sim root as a trust anchor",
                reason=Reason.CHAIN_UNTRUSTED_ROOT,
            )
        _check_validity(issuer, now, "sim root certificate")
        _check_validity(cert, now, "sim platform certificate")
        # 3. the report names this platform key
        spki = platform_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if hashlib.sha256(spki).digest() != report.platform_id:
            raise VerificationError(
                "sim report platform_id is not the hash of its platform certificate's key",
                reason=Reason.KEY_NOT_BOUND,
            )
        # 4. signature over the report body
        r = int.from_bytes(report.signature[:32], "big")
        s = int.from_bytes(report.signature[32:], "big")
        try:
            platform_key.verify(
                encode_dss_signature(r, s), report.signed_bytes, ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature as exc:
            raise VerificationError(
                "sim report signature does not verify with its platform key",
                reason=Reason.SIGNATURE_INVALID,
            ) from exc
        produced = dt.datetime.fromtimestamp(report.timestamp_ms / 1000, tz=dt.UTC)
        return VerifiedEvidence(
            tee=TeeType.SIM,
            report_data=report.report_data,
            measurements={"measurement": report.measurement},
            debug=report.debug,
            platform_id=report.platform_id,
            code_identity=report.measurement,
            tcb_status=TcbStatus.NOT_APPLICABLE,
            svns={"svn": report.svn},
            hardware_backed=False,
            claims={
                "simulated": True,
                "measurement": report.measurement.hex(),
                "debug": report.debug,
                "svn": report.svn,
                "platform_id": report.platform_id.hex(),
                "report_data": report.report_data.hex(),
                "timestamp_ms": report.timestamp_ms,
                "platform_cert_subject": cert_subject,
            },
            verified_at=now,
            warnings=(SIMULATED_WARNING,),
            produced_at=produced,
            seal=_SEAL,
        )


__all__ = ["SIMULATED_WARNING", "SimVerifier"]
