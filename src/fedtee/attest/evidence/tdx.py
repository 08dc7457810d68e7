"""TDX evidence: an Intel DCAP ECDSA quote v4 (TDX 1.0 body) or v5 (TDX 1.0/1.5), no aux.

The PCK certificate chain travels inside the quote (certification data type 5), so
``Evidence(tee="tdx", data=quote)`` is complete. Layouts live in
:mod:`fedtee.attest.evidence.dcap`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedtee.attest.evidence import dcap
from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """A raw quote file (configfs-tsm outblob) -> Evidence."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise EvidenceFormatError(f"quote is {len(data)} bytes", reason=Reason.EVIDENCE_TOO_LARGE)
    evidence = Evidence(tee=TeeType.TDX, data=data, aux=dict(aux))
    dcap.quote_for(evidence, TeeType.TDX)
    return evidence


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of TDX evidence for ``fedtee attest show``."""
    quote = dcap.quote_for(evidence, TeeType.TDX)
    return {"tee": TeeType.TDX.value, **dcap.describe_quote(quote)}


__all__ = ["describe", "evidence_from_files"]
