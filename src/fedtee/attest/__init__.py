"""fedtee's verifier library: parse, verify and appraise TEE evidence.

Usable alone: it never imports fedtee's server, client or wire layers. Typical use::

    from fedtee.attest import Evidence, Policy, TeeType, embedded_anchors, evaluate
    from fedtee.attest.trust.collateral import DirectoryCollateral

    evaluation = evaluate(
        Evidence(TeeType.SGX, quote),
        policy=Policy.from_toml(policy_text),
        trust=embedded_anchors(),
        collateral=DirectoryCollateral("collateral/"),
        now=now,
        nonce=nonce,
        public_key=client_key_der,
    )
    if evaluation.result.accepted: ...

Every name below is loaded on first use (:pep:`562` ``__getattr__``), so ``import
fedtee.attest`` loads no backend, no ``cryptography`` and no policy code; the verifier for a
TEE type is imported only when :func:`verifier_for` is asked for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedtee.attest.binding import check_report_data, report_data
    from fedtee.attest.model import (
        Attester,
        CollateralSource,
        Evidence,
        EvidenceVerifier,
        TcbStatus,
        TeeType,
        TrustAnchors,
        VerifiedEvidence,
    )
    from fedtee.attest.policy import Evaluation, Policy, appraise, evaluate
    from fedtee.attest.registry import verifier_for
    from fedtee.attest.result import AttestationResult, Status, Violation, verify_ear_jwt
    from fedtee.attest.trust import embedded_anchors

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "Attester": "fedtee.attest.model",
    "CollateralSource": "fedtee.attest.model",
    "Evidence": "fedtee.attest.model",
    "EvidenceVerifier": "fedtee.attest.model",
    "TcbStatus": "fedtee.attest.model",
    "TeeType": "fedtee.attest.model",
    "TrustAnchors": "fedtee.attest.model",
    "VerifiedEvidence": "fedtee.attest.model",
    "Evaluation": "fedtee.attest.policy",
    "Policy": "fedtee.attest.policy",
    "appraise": "fedtee.attest.policy",
    "evaluate": "fedtee.attest.policy",
    "AttestationResult": "fedtee.attest.result",
    "Status": "fedtee.attest.result",
    "Violation": "fedtee.attest.result",
    "verify_ear_jwt": "fedtee.attest.result",
    "verifier_for": "fedtee.attest.registry",
    "report_data": "fedtee.attest.binding",
    "check_report_data": "fedtee.attest.binding",
    "embedded_anchors": "fedtee.attest.trust",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fedtee.attest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "AttestationResult",
    "Attester",
    "CollateralSource",
    "Evaluation",
    "Evidence",
    "EvidenceVerifier",
    "Policy",
    "Status",
    "TcbStatus",
    "TeeType",
    "TrustAnchors",
    "VerifiedEvidence",
    "Violation",
    "appraise",
    "check_report_data",
    "embedded_anchors",
    "evaluate",
    "report_data",
    "verifier_for",
    "verify_ear_jwt",
]
