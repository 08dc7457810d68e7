"""Per-TEE extensions of the challenge step, for TEEs whose freshness needs more than a nonce.

Most evidence types need only the verifier's nonce. A TPM also needs the attestation key
(AK) bound to its endorsement key (EK): the verifier encrypts a secret to the EK for that
AK's name (TPM2_MakeCredential), and only that TPM can recover it (TPM2_ActivateCredential).
This module keeps that exchange pure and out of the server: the server stores whatever
``prepare`` returns as ``kept`` next to the nonce, sends ``to_client`` in the challenge, and
after verification calls ``check`` with the verified evidence and ``kept``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fedtee.attest.model import Evidence, TeeType, TrustAnchors, VerifiedEvidence


@dataclass(frozen=True)
class PreparedChallenge:
    to_client: Mapping[str, bytes]
    kept: Mapping[str, bytes]


class ChallengeExtension(Protocol):
    def prepare(
        self,
        *,
        nonce: bytes,
        request: Mapping[str, bytes],
        trust: TrustAnchors,
        now: datetime,
    ) -> PreparedChallenge:
        """Check the client's challenge input and make what the client must answer.

        Raises a typed :class:`~fedtee.errors.AttestationError` on bad input."""
        ...

    def check(
        self, *, evidence: Evidence, verified: VerifiedEvidence, kept: Mapping[str, bytes]
    ) -> None:
        """Raise a typed error unless the evidence answers the prepared challenge."""
        ...


# tee -> "module:factory"
_EXTENSIONS: dict[TeeType, str] = {
    TeeType.TPM: "fedtee.attest.verify.tpm:TpmChallenge",
}


def extension_for(tee: TeeType) -> ChallengeExtension | None:
    """The challenge extension for ``tee``, or None when a nonce is all it needs."""
    target = _EXTENSIONS.get(tee)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    ext: ChallengeExtension = factory()
    return ext


__all__ = ["ChallengeExtension", "PreparedChallenge", "extension_for"]
