"""Arm PSA token verification: COSE_Sign1 signature by a trusted Initial Attestation Key.

Steps:

1. Parse the token (:mod:`fedtee.attest.evidence.psa`): strict CBOR, COSE_Sign1 with alg in
   the protected header, required claims present with their sizes.
2. Key selection: the trusted IAKs are ``TrustAnchors.keys[TeeType.PSA]`` (``cryptography``
   EC public keys). A key whose instance id ``0x01 || SHA-256(uncompressed point)`` equals
   the token's instance id is the only one tried (TF-M derives the instance id that way);
   when none matches (platforms that derive it otherwise) each trusted key is tried.
3. Signature: ES256 / ES384 / ES512 over the COSE Sig_structure.

No collateral is read. Normalisation: measurements ``sw:<type>`` per software component
(``sw:<type>#<index>`` when types repeat) and ``implementation_id``; report_data the nonce;
platform_id the instance id; debug when the security lifecycle is not SECURED; code_identity
SHA-256 over the sorted software-component measurements; tcb_status NotApplicable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from fedtee.attest.evidence import cose
from fedtee.attest.evidence import psa as psa_format
from fedtee.attest.model import (
    _SEAL,
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.verify._cose import raw_point, verify_sign1
from fedtee.errors import Reason, VerificationError


def instance_id_of(key: ec.EllipticCurvePublicKey) -> bytes:
    """``0x01 || SHA-256(uncompressed point)``: the instance id TF-M derives from its IAK."""
    return b"\x01" + hashlib.sha256(raw_point(key)).digest()


def verify_with_trusted_keys(
    sign1: cose.CoseSign1, instance_id: bytes, keys: Sequence[Any], what: str
) -> ec.EllipticCurvePublicKey:
    """Steps 2 and 3, shared with the CCA platform token. Returns the key that verified."""
    ec_keys = [k for k in keys if isinstance(k, ec.EllipticCurvePublicKey)]
    if not ec_keys:
        raise VerificationError(
            f"no trusted {what} key in the trust anchors", reason=Reason.CHAIN_UNTRUSTED_ROOT
        )
    named = [k for k in ec_keys if instance_id_of(k) == instance_id]
    for key in named or ec_keys:
        if verify_sign1(sign1, key):
            return key
    detail = "the key its instance id names" if named else f"any of {len(ec_keys)} trusted keys"
    raise VerificationError(
        f"{what} signature ({sign1.alg_name}) does not verify with {detail}",
        reason=Reason.SIGNATURE_INVALID,
    )


class PsaVerifier:
    """Verifier for ``psa`` evidence (see the module docstring for the steps)."""

    tee = TeeType.PSA

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
        token = psa_format.token_for(evidence)  # step 1
        claims = token.claims
        verify_with_trusted_keys(  # steps 2 and 3
            token.sign1, claims.instance_id, trust.keys_for(TeeType.PSA), "PSA token"
        )
        measurements = psa_format.measurement_names(claims.software_components)
        measurements["implementation_id"] = claims.implementation_id
        code = hashlib.sha256(
            b"".join(sorted(c.measurement for c in claims.software_components))
        ).digest()
        return VerifiedEvidence(
            tee=TeeType.PSA,
            report_data=claims.nonce,
            measurements=measurements,
            debug=not psa_format.is_secured(claims.security_lifecycle),
            platform_id=claims.instance_id,
            code_identity=code,
            tcb_status=TcbStatus.NOT_APPLICABLE,
            svns={},
            hardware_backed=True,
            claims={"alg": token.sign1.alg_name, **claims.to_json()},
            verified_at=now,
            seal=_SEAL,
        )


__all__ = ["PsaVerifier", "instance_id_of", "verify_with_trusted_keys"]
