"""SGX evidence: an Intel DCAP ECDSA quote (v3, or v4/v5 with an SGX body) and no aux.

The PCK certificate chain travels inside the quote (certification data type 5), so
``Evidence(tee="sgx", data=quote)`` is complete. Layouts live in
:mod:`fedtee.attest.evidence.dcap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedtee.attest.evidence import dcap
from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """A raw quote file (as written by Gramine's /dev/attestation/quote) -> Evidence."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise EvidenceFormatError(f"quote is {len(data)} bytes", reason=Reason.EVIDENCE_TOO_LARGE)
    evidence = Evidence(tee=TeeType.SGX, data=data, aux=dict(aux))
    dcap.quote_for(evidence, TeeType.SGX)
    return evidence


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of SGX evidence for ``fedtee attest show``."""
    quote = dcap.quote_for(evidence, TeeType.SGX)
    return {"tee": TeeType.SGX.value, **dcap.describe_quote(quote)}


__all__ = ["describe", "evidence_from_files"]
