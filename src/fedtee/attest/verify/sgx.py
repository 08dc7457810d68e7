"""SGX verifier: an Intel DCAP ECDSA quote with an SGX enclave report body.

Verification steps and the collateral read are those of :mod:`fedtee.attest.verify._dcap`
(kinds ``sgx-tcbinfo``/<fmspc>, ``sgx-qe-identity``/``default``, ``pck-crl``/
``platform``|``processor``, ``root-crl``/``intel``, ``tcb-signing-chain``/``intel``).
Trust: ``TrustAnchors(roots={TeeType.SGX: fedtee.attest.trust.intel.anchors()})``.

The TCB status comes from the PCK certificate's TCB components and PCESVN matched against
Intel's TCB levels (not from the quote's CPUSVN, which is not comparable component-wise),
converged with the QE identity status. No matching level -> ``TcbStatus.UNSUPPORTED``.
"""

from __future__ import annotations

from datetime import datetime

from fedtee.attest.evidence import dcap
from fedtee.attest.evidence.dcap import SgxReportBody
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


class SgxVerifier:
    tee: TeeType = TeeType.SGX

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
    ) -> VerifiedEvidence:
        if evidence.tee != TeeType.SGX:
            raise EvidenceFormatError(
                f"SGX verifier given {evidence.tee.value} evidence",
                reason=Reason.EVIDENCE_TYPE_UNKNOWN,
            )
        quote = dcap.quote_for(evidence, TeeType.SGX)
        result = _dcap.verify_quote(
            quote,
            tee=TeeType.SGX,
            roots=_dcap.trusted_roots(trust.roots_for(TeeType.SGX)),
            collateral=collateral,
            now=now,
        )
        body = quote.body
        assert isinstance(body, SgxReportBody)  # quote_for checked the body type
        claims = {
            "mrenclave": body.mrenclave.hex(),
            "mrsigner": body.mrsigner.hex(),
            "isv_prod_id": body.isv_prod_id,
            "isv_svn": body.isv_svn,
            "config_svn": body.config_svn,
            "attributes": body.attributes.hex(),
            "miscselect": body.miscselect,
            "cpusvn": body.cpusvn.hex(),
            "report_data": body.report_data.hex(),
            "debug": body.debug,
            **_dcap.common_claims(result),
        }
        return VerifiedEvidence(
            tee=TeeType.SGX,
            report_data=body.report_data,
            measurements={"mrenclave": body.mrenclave, "mrsigner": body.mrsigner},
            debug=body.debug,
            platform_id=result.pck.ppid,
            code_identity=body.mrenclave,
            tcb_status=result.tcb_status,
            svns={
                "isv_svn": body.isv_svn,
                "config_svn": body.config_svn,
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


__all__ = ["SgxVerifier"]
