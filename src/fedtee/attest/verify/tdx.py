"""TDX verifier: an Intel DCAP ECDSA quote v4 (TDX 1.0 body) or v5 (TDX 1.0 / 1.5 body).

Verification steps and the collateral read are those of :mod:`fedtee.attest.verify._dcap`
(kinds ``tdx-tcbinfo``/<fmspc>, ``tdx-qe-identity``/``default``, ``pck-crl``/
``platform``|``processor``, ``root-crl``/``intel``, ``tcb-signing-chain``/``intel``).
Trust: ``TrustAnchors(roots={TeeType.TDX: fedtee.attest.trust.intel.anchors()})``.

TCB: the PCK's SGX components and PCESVN and the TD's TEE_TCB_SVN against the TDX TCB
levels; the TDX module identity (``tdxModule`` or ``tdxModuleIdentities`` ``TDX_<major>``)
must match MRSIGNERSEAM and SEAM attributes. ``code_identity`` is
SHA-384(MRTD || RTMR0 || RTMR1 || RTMR2 || RTMR3).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from fedtee.attest.evidence import dcap
from fedtee.attest.evidence.dcap import TdReportBody
from fedtee.attest.model import (
    _SEAL,
    CollateralSource,
    Evidence,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.verify import _dcap
from fedtee.errors import EvidenceFormatError, Reason


def td_code_identity(body: TdReportBody) -> bytes:
    return hashlib.sha384(body.mrtd + b"".join(body.rtmrs)).digest()


class TdxVerifier:
    tee: TeeType = TeeType.TDX

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
    ) -> VerifiedEvidence:
        if evidence.tee != TeeType.TDX:
            raise EvidenceFormatError(
                f"TDX verifier given {evidence.tee.value} evidence",
                reason=Reason.EVIDENCE_TYPE_UNKNOWN,
            )
        quote = dcap.quote_for(evidence, TeeType.TDX)
        result = _dcap.verify_quote(
            quote,
            tee=TeeType.TDX,
            roots=_dcap.trusted_roots(trust.roots_for(TeeType.TDX)),
            collateral=collateral,
            now=now,
        )
        body = quote.body
        assert isinstance(body, TdReportBody)  # quote_for checked the body type
        measurements = {
            "mrtd": body.mrtd,
            "rtmr0": body.rtmr0,
            "rtmr1": body.rtmr1,
            "rtmr2": body.rtmr2,
            "rtmr3": body.rtmr3,
            "mrseam": body.mrseam,
            "mrconfigid": body.mrconfigid,
            "mrowner": body.mrowner,
            "mrownerconfig": body.mrownerconfig,
        }
        if body.mrservicetd is not None:
            measurements["mrservicetd"] = body.mrservicetd
        claims = {
            **{name: value.hex() for name, value in measurements.items()},
            "tee_tcb_svn": body.tee_tcb_svn.hex(),
            "td_attributes": body.td_attributes.hex(),
            "seam_attributes": body.seam_attributes.hex(),
            "xfam": body.xfam.hex(),
            "report_data": body.report_data.hex(),
            "debug": body.debug,
            "tdx_module_status": result.module_status.value if result.module_status else None,
            **_dcap.common_claims(result),
        }
        if body.tee_tcb_svn2 is not None:
            claims["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        return VerifiedEvidence(
            tee=TeeType.TDX,
            report_data=body.report_data,
            measurements=measurements,
            debug=body.debug,
            platform_id=result.pck.ppid,
            code_identity=td_code_identity(body),
            tcb_status=result.tcb_status,
            svns={
                "tdx_module_svn": body.tee_tcb_svn[0],
                "tdx_module_major": body.tee_tcb_svn[1],
                "qe_svn": quote.certification.qe_report.isv_svn,
                "pce_svn": result.pck.pcesvn,
            },
            hardware_backed=True,
            claims=claims,
            verified_at=now,
            advisory_ids=result.advisory_ids,
            warnings=result.warnings,
            seal=_SEAL,
        )


__all__ = ["TdxVerifier", "td_code_identity"]
