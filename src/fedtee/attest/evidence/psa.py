"""Arm PSA attestation token: a COSE_Sign1 (ES256/384/512) over a CBOR claims map.

``Evidence(tee="psa", data=<token>)``, no aux. Two claim-key sets exist and both are read:

- PSA 2.0.0 (``http://arm.com/psa/2.0.0``, draft-tschofenig-rats-psa-token / RFC 9783, also
  ``tag:psacertified.org,2023:psa#tfm``): EAT keys;
- ``PSA_IOT_PROFILE_1``: the older private-use keys -75000..-75010.

The profile is recognised from which profile claim is present (265 or -75000).
Parse-only: no crypto (see :mod:`fedtee.attest.verify.psa`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from fedtee.attest.evidence import cose
from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import EvidenceFormatError, Reason


@dataclass(frozen=True)
class ClaimKeys:
    profile: int
    client_id: int
    security_lifecycle: int
    implementation_id: int
    boot_seed: int
    certification_reference: int
    software_components: int
    no_sw_measurements: int | None
    nonce: int
    instance_id: int
    verification_service: int


# PSA 2.0.0 / RFC 9783 (EAT claim keys).
PSA_2_0_0: Final = ClaimKeys(
    profile=265,
    client_id=2394,
    security_lifecycle=2395,
    implementation_id=2396,
    boot_seed=2397,
    certification_reference=2398,
    software_components=2399,
    no_sw_measurements=None,
    nonce=10,
    instance_id=256,
    verification_service=2400,
)
# PSA_IOT_PROFILE_1 (draft-tschofenig-rats-psa-token-04 and earlier).
PSA_IOT_PROFILE_1: Final = ClaimKeys(
    profile=-75000,
    client_id=-75001,
    security_lifecycle=-75002,
    implementation_id=-75003,
    boot_seed=-75004,
    certification_reference=-75005,
    software_components=-75006,
    no_sw_measurements=-75007,
    nonce=-75008,
    instance_id=-75009,
    verification_service=-75010,
)

# Software component map keys (same in both profiles).
SW_TYPE: Final = 1
SW_MEASUREMENT: Final = 2
SW_VERSION: Final = 4
SW_SIGNER_ID: Final = 5
SW_DESCRIPTION: Final = 6

NONCE_SIZES: Final = (32, 48, 64)
INSTANCE_ID_SIZE: Final = 33  # 0x01 (EAT UEID type RAND) || SHA-256 of the IAK public key
IMPLEMENTATION_ID_SIZE: Final = 32
MAX_SW_COMPONENTS: Final = 64

# Security lifecycle: the high byte names the state (RFC 9783 §4.2.1).
LIFECYCLES: Final[Mapping[int, str]] = MappingProxyType(
    {
        0x00: "unknown",
        0x10: "assembly_and_test",
        0x20: "psa_rot_provisioning",
        0x30: "secured",
        0x40: "non_psa_rot_debug",
        0x50: "recoverable_psa_rot_debug",
        0x60: "decommissioned",
    }
)
SECURED: Final = 0x30


def lifecycle_name(value: int) -> str:
    return LIFECYCLES.get((value >> 8) & 0xFF, "invalid")


def is_secured(value: int) -> bool:
    """Only the SECURED lifecycle counts as production; everything else counts as debug."""
    return (value >> 8) & 0xFF == SECURED and 0 <= value <= 0xFFFF


@dataclass(frozen=True, kw_only=True)
class SoftwareComponent:
    type: str | None
    measurement: bytes
    version: str | None
    signer_id: bytes | None
    description: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "measurement": self.measurement.hex(),
            "version": self.version,
            "signer_id": self.signer_id.hex() if self.signer_id is not None else None,
            "description": self.description,
        }


def _bad(message: str, reason: Reason = Reason.EVIDENCE_FIELD_INVALID) -> EvidenceFormatError:
    return EvidenceFormatError(message, reason=reason)


def get_typed(claims: Mapping[Any, Any], key: int, kind: type, what: str, *, required: bool) -> Any:
    """Claim ``key`` of type ``kind`` (None when absent and not required)."""
    if key not in claims:
        if required:
            raise _bad(f"{what} claim ({key}) is missing", Reason.EVIDENCE_MALFORMED)
        return None
    value = claims[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{what} claim ({key}) is {type(value).__name__}, expected {kind.__name__}")
    return value


def get_bytes(
    claims: Mapping[Any, Any], key: int, what: str, sizes: tuple[int, ...] | None, *, required: bool
) -> bytes | None:
    value: bytes | None = get_typed(claims, key, bytes, what, required=required)
    if value is not None and sizes is not None and len(value) not in sizes:
        raise _bad(f"{what} is {len(value)} bytes; expected one of {sizes}")
    return value


def parse_software_components(value: Any, what: str) -> tuple[SoftwareComponent, ...]:
    if not isinstance(value, tuple):
        raise _bad(f"{what} is not an array")
    if not value or len(value) > MAX_SW_COMPONENTS:
        raise _bad(f"{what} has {len(value)} entries; must be 1..{MAX_SW_COMPONENTS}")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            raise _bad(f"{what}[{i}] is not a map")
        name = f"{what}[{i}]"
        measurement = get_bytes(entry, SW_MEASUREMENT, f"{name} measurement", None, required=True)
        assert measurement is not None
        if not measurement:
            raise _bad(f"{name} measurement is empty")
        out.append(
            SoftwareComponent(
                type=get_typed(entry, SW_TYPE, str, f"{name} type", required=False),
                measurement=measurement,
                version=get_typed(entry, SW_VERSION, str, f"{name} version", required=False),
                signer_id=get_bytes(entry, SW_SIGNER_ID, f"{name} signer id", None, required=False),
                description=get_typed(
                    entry, SW_DESCRIPTION, str, f"{name} description", required=False
                ),
            )
        )
    return tuple(out)


def measurement_names(components: tuple[SoftwareComponent, ...]) -> dict[str, bytes]:
    """``sw:<type>`` -> measurement; types shared by several components get ``#<index>``."""
    counts: dict[str, int] = {}
    for c in components:
        t = c.type or ""
        counts[t] = counts.get(t, 0) + 1
    out: dict[str, bytes] = {}
    for i, c in enumerate(components):
        t = c.type or ""
        name = f"sw:{t}" if counts[t] == 1 and t else f"sw:{t}#{i}"
        out[name] = c.measurement
    return out


@dataclass(frozen=True, kw_only=True)
class PsaClaims:
    profile: str
    keys: ClaimKeys
    nonce: bytes
    instance_id: bytes
    implementation_id: bytes
    boot_seed: bytes | None
    security_lifecycle: int
    client_id: int
    software_components: tuple[SoftwareComponent, ...]
    certification_reference: str | None
    verification_service: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "nonce": self.nonce.hex(),
            "instance_id": self.instance_id.hex(),
            "implementation_id": self.implementation_id.hex(),
            "boot_seed": self.boot_seed.hex() if self.boot_seed is not None else None,
            "security_lifecycle": self.security_lifecycle,
            "security_lifecycle_name": lifecycle_name(self.security_lifecycle),
            "client_id": self.client_id,
            "software_components": [c.to_json() for c in self.software_components],
            "certification_reference": self.certification_reference,
            "verification_service": self.verification_service,
        }


def parse_claims(claims: Mapping[Any, Any]) -> PsaClaims:
    if PSA_2_0_0.profile in claims:
        keys = PSA_2_0_0
    elif PSA_IOT_PROFILE_1.profile in claims:
        keys = PSA_IOT_PROFILE_1
    else:
        raise _bad("PSA token has no profile claim (265 or -75000)", Reason.EVIDENCE_MALFORMED)
    profile = get_typed(claims, keys.profile, str, "profile", required=True)
    nonce = get_bytes(claims, keys.nonce, "nonce", NONCE_SIZES, required=True)
    instance_id = get_bytes(
        claims, keys.instance_id, "instance id", (INSTANCE_ID_SIZE,), required=True
    )
    implementation_id = get_bytes(
        claims,
        keys.implementation_id,
        "implementation id",
        (IMPLEMENTATION_ID_SIZE,),
        required=True,
    )
    assert nonce is not None and instance_id is not None and implementation_id is not None
    if instance_id[0] != 0x01:
        raise _bad(f"instance id type 0x{instance_id[0]:02x}; expected 0x01 (RAND)")
    lifecycle = get_typed(claims, keys.security_lifecycle, int, "security lifecycle", required=True)
    if not 0 <= lifecycle <= 0xFFFF:
        raise _bad(f"security lifecycle {lifecycle} is not a 16-bit value")
    client_id = get_typed(claims, keys.client_id, int, "client id", required=True)
    sw_raw = claims.get(keys.software_components)
    no_sw = keys.no_sw_measurements is not None and keys.no_sw_measurements in claims
    if sw_raw is None and not no_sw:
        raise _bad(
            "PSA token has neither software components nor no-sw-measurements",
            Reason.EVIDENCE_MALFORMED,
        )
    components = (
        parse_software_components(sw_raw, "software components") if sw_raw is not None else ()
    )
    return PsaClaims(
        profile=profile,
        keys=keys,
        nonce=nonce,
        instance_id=instance_id,
        implementation_id=implementation_id,
        boot_seed=get_bytes(claims, keys.boot_seed, "boot seed", None, required=False),
        security_lifecycle=lifecycle,
        client_id=client_id,
        software_components=components,
        certification_reference=get_typed(
            claims, keys.certification_reference, str, "certification reference", required=False
        ),
        verification_service=get_typed(
            claims, keys.verification_service, str, "verification service", required=False
        ),
    )


@dataclass(frozen=True, kw_only=True)
class PsaToken:
    sign1: cose.CoseSign1
    claims: PsaClaims


def parse_token(data: bytes) -> PsaToken:
    """Token bytes -> :class:`PsaToken`; raises only :class:`EvidenceFormatError`."""
    sign1 = cose.parse_sign1(data)
    return PsaToken(sign1=sign1, claims=parse_claims(cose.claims_map(sign1, "PSA token")))


def token_for(evidence: Evidence) -> PsaToken:
    if evidence.tee is not TeeType.PSA:
        raise _bad(f"evidence is {evidence.tee.value}, not psa", Reason.EVIDENCE_TYPE_UNKNOWN)
    if evidence.aux:
        raise _bad(f"psa evidence takes no aux items; got {sorted(evidence.aux)}")
    return parse_token(evidence.data)


def evidence_from_files(data: bytes, aux: Mapping[str, bytes]) -> Evidence:
    """A PSA token file (COSE_Sign1, as TF-M's attestation service emits it) -> Evidence."""
    if len(data) > MAX_EVIDENCE_BYTES:
        raise _bad(f"token is {len(data)} bytes", Reason.EVIDENCE_TOO_LARGE)
    evidence = Evidence(tee=TeeType.PSA, data=data, aux=dict(aux))
    token_for(evidence)
    return evidence


def describe(evidence: Evidence) -> dict[str, Any]:
    """A JSON-friendly view of a PSA token for ``fedtee attest show``."""
    token = token_for(evidence)
    return {"tee": TeeType.PSA.value, "alg": token.sign1.alg_name, **token.claims.to_json()}


__all__ = [
    "PSA_2_0_0",
    "PSA_IOT_PROFILE_1",
    "ClaimKeys",
    "PsaClaims",
    "PsaToken",
    "SoftwareComponent",
    "describe",
    "evidence_from_files",
    "is_secured",
    "lifecycle_name",
    "measurement_names",
    "parse_claims",
    "parse_software_components",
    "parse_token",
    "token_for",
]
