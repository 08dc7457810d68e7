"""Arm CCA token verification: platform token by the CPAK, realm token by the RAK it carries,
and the RAK bound to the platform through the platform challenge.

Steps:

1. Parse (:mod:`fedtee.attest.evidence.cca`): tag 399 map with exactly the platform (44234)
   and realm (44241) tokens, each a strict COSE_Sign1 with its required claims.
2. Platform token: ES256/384/512 signature by a trusted CPAK from
   ``TrustAnchors.keys[TeeType.CCA]``, chosen by instance id as for PSA
   (:func:`fedtee.attest.verify.psa.verify_with_trusted_keys`), else each trusted key.
3. Realm token: signature by the realm attestation key carried in claim 44237.
4. Binding: the platform challenge must equal the hash (algorithm named in realm claim 44240)
   of the realm key bytes exactly as carried; otherwise ``KEY_NOT_BOUND``: a realm token
   signed by some other key could be paired with any genuine platform token.

No collateral is read. Normalisation: measurements ``rim``, ``rem0``..``rem3``,
``personalization`` and the platform's ``sw:<type>``; report_data the realm challenge;
platform_id the platform instance id; debug when the platform lifecycle is not SECURED;
code_identity SHA-512(rim || rem0..3); tcb_status NotApplicable.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from fedtee.attest.evidence import cca as cca_format
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
from fedtee.attest.verify._cose import decode_ec_key, verify_sign1
from fedtee.attest.verify.psa import verify_with_trusted_keys
from fedtee.errors import Reason, VerificationError

_HASHES = {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}


class CcaVerifier:
    """Verifier for ``cca`` evidence (see the module docstring for the steps)."""

    tee = TeeType.CCA

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
        token = cca_format.token_for(evidence)  # step 1
        platform, realm = token.platform, token.realm
        verify_with_trusted_keys(  # step 2
            token.platform_sign1,
            platform.instance_id,
            trust.keys_for(TeeType.CCA),
            "CCA platform token",
        )
        rak = decode_ec_key(realm.public_key, "realm public key (44237)")
        if not verify_sign1(token.realm_sign1, rak):  # step 3
            raise VerificationError(
                "CCA realm token signature does not verify with the key it carries",
                reason=Reason.SIGNATURE_INVALID,
            )
        bound = hashlib.new(_HASHES[realm.public_key_hash_algo], realm.public_key).digest()
        if bound != platform.challenge:  # step 4
            raise VerificationError(
                f"platform challenge {platform.challenge.hex()[:16]}... is not the "
                f"{realm.public_key_hash_algo} of the realm key ({bound.hex()[:16]}...)",
                reason=Reason.KEY_NOT_BOUND,
            )
        measurements = {"rim": realm.rim, "personalization": realm.personalization}
        measurements.update({f"rem{i}": rem for i, rem in enumerate(realm.rems)})
        measurements.update(psa_format.measurement_names(platform.software_components))
        return VerifiedEvidence(
            tee=TeeType.CCA,
            report_data=realm.challenge,
            measurements=measurements,
            debug=not psa_format.is_secured(platform.lifecycle),
            platform_id=platform.instance_id,
            code_identity=hashlib.sha512(realm.rim + b"".join(realm.rems)).digest(),
            tcb_status=TcbStatus.NOT_APPLICABLE,
            svns={},
            hardware_backed=True,
            claims={
                "platform": {"alg": token.platform_sign1.alg_name, **platform.to_json()},
                "realm": {"alg": token.realm_sign1.alg_name, **realm.to_json()},
            },
            verified_at=now,
            seal=_SEAL,
        )


__all__ = ["CcaVerifier"]
