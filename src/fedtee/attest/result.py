"""Attestation results: status, trustworthiness vector, claims and every violation.

A result is what a relying party acts on. It is serialisable as JSON and as a signed
EAR-style JWT (IETF draft-ietf-rats-ear: an "ear.status" per submodule plus an AR4SI
trustworthiness vector), signed ES256 with ``cryptography`` alone.

AR4SI tiers used in the trustworthiness vector (draft-ietf-rats-ar4si):
``0`` no claim, ``2``/``3`` affirming, ``32`` warning, ``96`` contraindicated.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from fedtee.attest.model import TeeType
from fedtee.errors import AttestationError, Reason, VerificationError

EAR_PROFILE = "tag:fedtee.dev,2026:ear/v1"
MAX_JWT_BYTES = 64 * 1024
CLOCK_SKEW_S = 300


class Status(StrEnum):
    AFFIRMING = "affirming"
    WARNING = "warning"
    CONTRAINDICATED = "contraindicated"


# AR4SI trustworthiness claims and the tier values fedtee uses.
TRUST_CLAIMS = (
    "instance-identity",
    "configuration",
    "executables",
    "file-system",
    "hardware",
    "runtime-opaque",
    "storage-opaque",
    "sourced-data",
)
TIER_NONE = 0
TIER_AFFIRMING = 2
TIER_WARNING = 32
TIER_CONTRAINDICATED = 96


@dataclass(frozen=True)
class Violation:
    """One reason a policy did not affirm: which field, what was found, what was expected."""

    reason: Reason
    field: str
    found: str
    expected: str

    def to_dict(self) -> dict[str, str]:
        return {
            "reason": self.reason.value,
            "field": self.field,
            "found": self.found,
            "expected": self.expected,
        }

    def __str__(self) -> str:
        return f"[{self.reason.value}] {self.field}: found {self.found}, expected {self.expected}"


@dataclass(frozen=True, kw_only=True)
class AttestationResult:
    status: Status
    tee: TeeType | None
    hardware_backed: bool
    code_identity: bytes | None = None
    platform_id: bytes | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)
    violations: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = ()
    trust_vector: Mapping[str, int] = field(default_factory=dict)
    appraised_at: dt.datetime | None = None
    policy_unsafe: bool = False

    @property
    def affirming(self) -> bool:
        return self.status is Status.AFFIRMING

    @property
    def accepted(self) -> bool:
        """Affirming or warning: the relying party may proceed (and should show warnings)."""
        return self.status is not Status.CONTRAINDICATED

    @property
    def reasons(self) -> tuple[Reason, ...]:
        return tuple(v.reason for v in self.violations)

    @property
    def first_reason(self) -> Reason | None:
        return self.violations[0].reason if self.violations else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "tee": self.tee.value if self.tee else None,
            "hardware_backed": self.hardware_backed,
            "code_identity": self.code_identity.hex() if self.code_identity else None,
            "platform_id": self.platform_id.hex() if self.platform_id else None,
            "claims": dict(self.claims),
            "violations": [v.to_dict() for v in self.violations],
            "warnings": list(self.warnings),
            "trust_vector": dict(self.trust_vector),
            "appraised_at": self.appraised_at.isoformat() if self.appraised_at else None,
            "policy_unsafe": self.policy_unsafe,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> AttestationResult:
        try:
            raw = json.loads(text)
            return cls(
                status=Status(raw["status"]),
                tee=TeeType(raw["tee"]) if raw["tee"] else None,
                hardware_backed=bool(raw["hardware_backed"]),
                code_identity=bytes.fromhex(raw["code_identity"]) if raw["code_identity"] else None,
                platform_id=bytes.fromhex(raw["platform_id"]) if raw["platform_id"] else None,
                claims=dict(raw["claims"]),
                violations=tuple(
                    Violation(Reason(v["reason"]), v["field"], v["found"], v["expected"])
                    for v in raw["violations"]
                ),
                warnings=tuple(raw["warnings"]),
                trust_vector={str(k): int(v) for k, v in raw["trust_vector"].items()},
                appraised_at=(
                    dt.datetime.fromisoformat(raw["appraised_at"]) if raw["appraised_at"] else None
                ),
                policy_unsafe=bool(raw.get("policy_unsafe", False)),
            )
        # RecursionError: deeply nested JSON must fail typed, not crash the caller.
        except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
            raise AttestationError(
                f"attestation result JSON is malformed: {exc}", reason=Reason.EVIDENCE_MALFORMED
            ) from exc

    # --- EAR-style JWT ----------------------------------------------------------------
    def to_ear_jwt(
        self,
        private_key: ec.EllipticCurvePrivateKey,
        *,
        issuer: str,
        now: dt.datetime,
        ttl: dt.timedelta = dt.timedelta(minutes=10),
    ) -> str:
        """Sign this result as an EAR-style JWT (ES256)."""
        if not isinstance(private_key.curve, ec.SECP256R1):
            raise ValueError("EAR JWTs are signed ES256: a P-256 key is required")
        payload = {
            "eat_profile": EAR_PROFILE,
            "iss": issuer,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "ear.verifier-id": {"developer": "fedtee", "build": "fedtee-attest"},
            "submods": {
                (self.tee.value if self.tee else "unknown"): {
                    "ear.status": self.status.value,
                    "ear.trustworthiness-vector": dict(self.trust_vector),
                    "fedtee.hardware-backed": self.hardware_backed,
                    "fedtee.code-identity": self.code_identity.hex()
                    if self.code_identity
                    else None,
                    "fedtee.violations": [v.to_dict() for v in self.violations],
                    "fedtee.result": self.to_dict(),
                }
            },
        }
        header = {"alg": "ES256", "typ": "JWT"}
        signing_input = _b64(_canon(header)) + "." + _b64(_canon(payload))
        der = private_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def verify_ear_jwt(
    token: str, public_key: ec.EllipticCurvePublicKey, *, now: dt.datetime
) -> AttestationResult:
    """Check an EAR JWT's ES256 signature and expiry; return the result it carries."""
    if not isinstance(token, str) or len(token) > MAX_JWT_BYTES:
        raise VerificationError("EAR JWT too large", reason=Reason.EVIDENCE_TOO_LARGE)
    parts = token.split(".")
    if len(parts) != 3:
        raise VerificationError("EAR JWT must have 3 parts", reason=Reason.EVIDENCE_MALFORMED)
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        sig = _unb64(parts[2])
    except (ValueError, RecursionError) as exc:
        raise VerificationError(
            f"EAR JWT is malformed: {exc}", reason=Reason.EVIDENCE_MALFORMED
        ) from exc
    if not isinstance(header, dict) or header.get("alg") != "ES256" or len(sig) != 64:
        raise VerificationError("EAR JWT must be ES256", reason=Reason.SIGNATURE_INVALID)
    try:
        public_key.verify(
            encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")),
            (parts[0] + "." + parts[1]).encode(),
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature as exc:
        raise VerificationError(
            "EAR JWT signature is invalid", reason=Reason.SIGNATURE_INVALID
        ) from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("exp"), int):
        raise VerificationError("EAR JWT lacks exp", reason=Reason.EVIDENCE_MALFORMED)
    if now.timestamp() >= payload["exp"]:
        raise VerificationError("EAR JWT has expired", reason=Reason.CREDENTIAL_EXPIRED)
    iat = payload.get("iat")
    if not isinstance(iat, int) or iat > now.timestamp() + CLOCK_SKEW_S:
        # A token issued in the future means a wrong clock or a forged timeline.
        raise VerificationError(
            f"EAR JWT iat {iat!r} is missing or later than now", reason=Reason.EVIDENCE_MALFORMED
        )
    if payload.get("eat_profile") != EAR_PROFILE:
        raise VerificationError(
            f"EAR JWT profile {payload.get('eat_profile')!r}; expected {EAR_PROFILE}",
            reason=Reason.EVIDENCE_MALFORMED,
        )
    submods = payload.get("submods")
    if not isinstance(submods, dict) or len(submods) != 1:
        raise VerificationError(
            "EAR JWT must carry one submodule", reason=Reason.EVIDENCE_MALFORMED
        )
    (sub,) = submods.values()
    try:
        return AttestationResult.from_json(json.dumps(sub["fedtee.result"]))
    except (KeyError, TypeError, AttestationError) as exc:
        raise VerificationError(
            f"EAR JWT lacks a well-formed fedtee.result: {exc}", reason=Reason.EVIDENCE_MALFORMED
        ) from exc


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        # validate=True: characters outside base64url are an error, not silently skipped.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad base64url: {exc}") from exc


__all__ = [
    "EAR_PROFILE",
    "TRUST_CLAIMS",
    "AttestationResult",
    "Status",
    "Violation",
    "verify_ear_jwt",
]
