"""Arm CCA attestation token: a platform token and a realm token in one CBOR map.

``Evidence(tee="cca", data=<token>)``, no aux. Layout (Arm RMM specification 1.0, "Attestation
token format"; CCA Security Model)::

    399({ 44234: bstr .cbor COSE_Sign1(platform claims),     ; signed by the CPAK
          44241: bstr .cbor COSE_Sign1(realm claims) })      ; signed by the RAK

Platform claims (PSA-style keys): profile 265, challenge 10 (hash of the RAK public key),
implementation id 2396, instance id 256, config 2401, lifecycle 2395, software components
2399, verification service 2400, hash algorithm 2402.

Realm claims: challenge 10 (64 bytes, the user's report data), personalization value 44235
(64 bytes), measurement hash algorithm 44236, RAK public key 44237 (a 97-byte uncompressed
P-384 point, or a COSE_Key in later profiles), RIM 44238, REMs 44239 (4 values), RAK hash
algorithm 44240.

Parse-only: no crypto (see :mod:`fedtee.attest.verify.cca`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from fedtee.attest.evidence import cose
from fedtee.attest.evidence.psa import (
    SoftwareComponent,
    get_bytes,
    get_typed,
    lifecycle_name,
    parse_software_components,
)
from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason

CCA_TOKEN_TAG: Final = 399
PLATFORM_TOKEN: Final = 44234
REALM_TOKEN: Final = 44241

# Platform claim keys.
P_PROFILE: Final = 265
P_CHALLENGE: Final = 10
P_IMPLEMENTATION_ID: Final = 2396
P_INSTANCE_ID: Final = 256
P_CONFIG: Final = 2401
P_LIFECYCLE: Final = 2395
P_SW_COMPONENTS: Final = 2399
P_VERIFICATION_SERVICE: Final = 2400
P_HASH_ALGO: Final = 2402

# Realm claim keys.
R_PROFILE: Final = 265
R_CHALLENGE: Final = 10
R_PERSONALIZATION: Final = 44235
R_HASH_ALGO: Final = 44236
R_PUBLIC_KEY: Final = 44237
R_RIM: Final = 44238
R_REMS: Final = 44239
R_PUBLIC_KEY_HASH_ALGO: Final = 44240

MEASUREMENT_SIZES: Final = (32, 48, 64)
REM_COUNT: Final = 4
REALM_CHALLENGE_SIZE: Final = 64
MAX_CONFIG_BYTES: Final = 4096
HASH_ALGOS: Final = ("sha-256", "sha-384", "sha-512")


def _bad(message: str, reason: Reason = Reason.EVIDENCE_FIELD_INVALID) -> EvidenceFormatError:
    return EvidenceFormatError(message, reason=reason)


def _hash_algo(claims: Mapping[Any, Any], key: int, what: str, *, required: bool) -> str | None:
    value: str | None = get_typed(claims, key, str, what, required=required)
    if value is not None and value not in HASH_ALGOS:
        raise _bad(f"{what} {value!r}; supported: {', '.join(HASH_ALGOS)}")
    return value


@dataclass(frozen=True, kw_only=True)
class PlatformClaims:
    profile: str
    challenge: bytes
    implementation_id: bytes
    instance_id: bytes
    config: bytes
    lifecycle: int
    software_components: tuple[SoftwareComponent, ...]
    verification_service: str | None
    hash_algo: str

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "challenge": self.challenge.hex(),
            "implementation_id": self.implementation_id.hex(),
            "instance_id": self.instance_id.hex(),
            "config": self.config.hex(),
            "lifecycle": self.lifecycle,
            "lifecycle_name": lifecycle_name(self.lifecycle),
            "software_components": [c.to_json() for c in self.software_components],
            "verification_service": self.verification_service,
            "hash_algo": self.hash_algo,
        }


@dataclass(frozen=True, kw_only=True)
class RealmClaims:
    profile: str | None
    challenge: bytes
    personalization: bytes
    hash_algo: str
    public_key: bytes  # exactly as carried: the platform challenge hashes these bytes
    rim: bytes
    rems: tuple[bytes, ...]
    public_key_hash_algo: str

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "challenge": self.challenge.hex(),
            "personalization": self.personalization.hex(),
            "hash_algo": self.hash_algo,
            "public_key": self.public_key.hex(),
            "rim": self.rim.hex(),
            "rems": [r.hex() for r in self.rems],
            "public_key_hash_algo": self.public_key_hash_algo,
        }


def _need_bytes(
    claims: Mapping[Any, Any], key: int, what: str, sizes: tuple[int, ...] | None
) -> bytes:
    value = get_bytes(claims, key, what, sizes, required=True)
    assert value is not None
    return value


def parse_platform_claims(claims: Mapping[Any, Any]) -> PlatformClaims:
    config = _need_bytes(claims, P_CONFIG, "platform config", None)
    if len(config) > MAX_CONFIG_BYTES:
        raise _bad(f"platform config is {len(config)} bytes", Reason.EVIDENCE_TOO_LARGE)
    lifecycle = get_typed(claims, P_LIFECYCLE, int, "platform lifecycle", required=True)
    if not 0 <= lifecycle <= 0xFFFF:
        raise _bad(f"platform lifecycle {lifecycle} is not a 16-bit value")
    instance_id = _need_bytes(claims, P_INSTANCE_ID, "platform instance id", (33,))
    if instance_id[0] != 0x01:
        raise _bad(f"platform instance id type 0x{instance_id[0]:02x}; expected 0x01")
    hash_algo = _hash_algo(claims, P_HASH_ALGO, "platform hash algorithm", required=True)
    assert hash_algo is not None
    return PlatformClaims(
        profile=get_typed(claims, P_PROFILE, str, "platform profile", required=True),
        challenge=_need_bytes(claims, P_CHALLENGE, "platform challenge", MEASUREMENT_SIZES),
        implementation_id=_need_bytes(claims, P_IMPLEMENTATION_ID, "implementation id", (32,)),
        instance_id=instance_id,
        config=config,
        lifecycle=lifecycle,
        software_components=parse_software_components(
            claims.get(P_SW_COMPONENTS), "platform software components"
        ),
        verification_service=get_typed(
            claims, P_VERIFICATION_SERVICE, str, "verification service", required=False
        ),
        hash_algo=hash_algo,
    )


def parse_realm_claims(claims: Mapping[Any, Any]) -> RealmClaims:
    rems_raw = claims.get(R_REMS)
    if not isinstance(rems_raw, tuple) or len(rems_raw) != REM_COUNT:
        raise _bad(f"realm REMs ({R_REMS}) must be an array of {REM_COUNT} byte strings")
    rems = []
    for i, rem in enumerate(rems_raw):
        if not isinstance(rem, bytes) or len(rem) not in MEASUREMENT_SIZES:
            raise _bad(f"realm REM{i} must be a 32, 48 or 64-byte string")
        rems.append(rem)
    public_key = _need_bytes(claims, R_PUBLIC_KEY, "realm public key", None)
    if not 1 <= len(public_key) <= 512:
        raise _bad(f"realm public key is {len(public_key)} bytes")
    hash_algo = _hash_algo(claims, R_HASH_ALGO, "realm measurement hash algorithm", required=True)
    key_hash = _hash_algo(claims, R_PUBLIC_KEY_HASH_ALGO, "realm key hash algorithm", required=True)
    assert hash_algo is not None and key_hash is not None
    return RealmClaims(
        profile=get_typed(claims, R_PROFILE, str, "realm profile", required=False),
        challenge=_need_bytes(claims, R_CHALLENGE, "realm challenge", (REALM_CHALLENGE_SIZE,)),
        personalization=_need_bytes(claims, R_PERSONALIZATION, "personalization value", (64,)),
        hash_algo=hash_algo,
        public_key=public_key,
        rim=_need_bytes(claims, R_RIM, "realm initial measurement", MEASUREMENT_SIZES),
        rems=tuple(rems),
        public_key_hash_algo=key_hash,
    )


@dataclass(frozen=True, kw_only=True)
class CcaToken:
    platform_sign1: cose.CoseSign1
    realm_sign1: cose.CoseSign1
    platform: PlatformClaims
    realm: RealmClaims


def parse_token(data: bytes) -> CcaToken:
    """Token bytes -> :class:`CcaToken`; raises only :class:`EvidenceFormatError`."""
    outer = cose.loads(data)
    if not isinstance(outer, cose.Tagged) or outer.tag != CCA_TOKEN_TAG:
        raise _bad(f"CCA token is not CBOR tag {CCA_TOKEN_TAG}", Reason.EVIDENCE_MALFORMED)
    body = outer.value
    if not isinstance(body, Mapping) or set(body) != {PLATFORM_TOKEN, REALM_TOKEN}:
        raise _bad(
            f"CCA token must map exactly {PLATFORM_TOKEN} (platform) and {REALM_TOKEN} (realm)",
            Reason.EVIDENCE_MALFORMED,
        )
    tokens = []
    for key, what in ((PLATFORM_TOKEN, "platform token"), (REALM_TOKEN, "realm token")):
        raw = body[key]
        if not isinstance(raw, bytes):
            raise _bad(f"CCA {what} is not a byte string", Reason.EVIDENCE_MALFORMED)
        tokens.append(cose.parse_sign1(raw))
    platform_sign1, realm_sign1 = tokens
    return CcaToken(
        platform_sign1=platform_sign1,
        realm_sign1=realm_sign1,
        platform=parse_platform_claims(cose.claims_map(platform_sign1, "CCA platform token")),
        realm=parse_realm_claims(cose.claims_map(realm_sign1, "CCA realm token")),
    )


def token_for(evidence: Evidence) -> CcaToken:
    if evidence.tee is not TeeType.CCA:
        raise _bad(f"evidence is {evidence.tee.value}, not cca", Reason.EVIDENCE_TYPE_UNKNOWN)
    if evidence.aux:
        raise _bad(f"cca evidence takes no aux items; got {sorted(evidence.aux)}")
    return parse_token(evidence.data)


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """A CCA token file (tag 399 CBOR, as the RMM returns it) -> Evidence."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise _bad(f"token is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    evidence = Evidence(tee=TeeType.CCA, data=data, aux=dict(aux))
    token_for(evidence)
    return evidence


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of a CCA token for ``fedtee attest show``."""
    token = token_for(evidence)
    return {
        "tee": TeeType.CCA.value,
        "platform": {"alg": token.platform_sign1.alg_name, **token.platform.to_json()},
        "realm": {"alg": token.realm_sign1.alg_name, **token.realm.to_json()},
    }


__all__ = [
    "CcaToken",
    "PlatformClaims",
    "RealmClaims",
    "describe",
    "evidence_from_files",
    "parse_platform_claims",
    "parse_realm_claims",
    "parse_token",
    "token_for",
]
