"""Which verifier handles which evidence type. Imports each backend lazily, so a user who
verifies only SNP reports never loads the DCAP code."""

from __future__ import annotations

import importlib

from fedtee.attest.model import EvidenceVerifier, TeeType
from fedtee.errors import EvidenceFormatError, Reason

# tee -> "module:factory"; the factory takes no arguments and returns an EvidenceVerifier.
_VERIFIERS: dict[TeeType, str] = {
    TeeType.SGX: "fedtee.attest.verify.sgx:SgxVerifier",
    TeeType.TDX: "fedtee.attest.verify.tdx:TdxVerifier",
    TeeType.SEV_SNP: "fedtee.attest.verify.snp:SnpVerifier",
    TeeType.TPM: "fedtee.attest.verify.tpm:TpmVerifier",
    TeeType.PSA: "fedtee.attest.verify.psa:PsaVerifier",
    TeeType.CCA: "fedtee.attest.verify.cca:CcaVerifier",
    TeeType.SIM: "fedtee.attest.verify.sim:SimVerifier",
}


def verifier_for(tee: TeeType | str) -> EvidenceVerifier:
    """Return the verifier for ``tee``; unknown types are an ``EVIDENCE_TYPE_UNKNOWN`` error."""
    kind = tee if isinstance(tee, TeeType) else TeeType.parse(tee)
    target = _VERIFIERS.get(kind)
    if target is None:
        raise EvidenceFormatError(
            f"no verifier for evidence type {kind.value!r}", reason=Reason.EVIDENCE_TYPE_UNKNOWN
        )
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    verifier: EvidenceVerifier = factory()
    return verifier


__all__ = ["verifier_for"]
