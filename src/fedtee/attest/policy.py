"""Policies of reference values, and appraisal of verified evidence against them.

A policy is a versioned TOML file. A TEE type is accepted only if it has a table::

    version = 1

    [tee.sgx]
    debug = "forbid"                         # "forbid" (default) or "allow"
    accepted_tcb = ["UpToDate"]              # affirming TCB statuses (default: UpToDate)
    warn_tcb = ["SWHardeningNeeded"]         # accepted, but the result is a warning
    max_evidence_age_s = 300                 # only where the evidence carries its time

    [tee.sgx.reference]                      # every listed name must match one value
    mrenclave = ["8f17...", "..."]
    mrsigner = ["83d7..."]

    [tee.sgx.min_svn]                        # name -> minimum security version
    isv_svn = 1

    [tee.tpm]
    on_reset = "reject"                      # "reject" (default) or "reenrol": what the
                                             # server does when a client's TPM was reset or
                                             # restarted since its last enrolment

    [tee.sim]
    allow_simulated = true                   # the simulated TEE needs this, loudly

Rules (fail closed): an unknown key anywhere is an error naming it; a value of the wrong
type or a malformed hex string is an error; a policy that accepts no TEE type is
``POLICY_EMPTY``; ``Unsupported`` and ``Revoked`` TCBs are never accepted; ``NotApplicable``
(TEEs without TCB levels: TPM, PSA, CCA, sim) is always accepted as far as TCB goes.
:meth:`Policy.unsafe_allow_all` exists for development only: it logs a warning and every
result it produces says ``policy_unsafe``.

Appraisal reports every violation at once (field, found, expected), as go-sev-guest does.
"""

from __future__ import annotations

import datetime as dt
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fedtee.attest.binding import DOMAIN_TAG, check_report_data
from fedtee.attest.model import (
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.result import (
    TIER_AFFIRMING,
    TIER_CONTRAINDICATED,
    TIER_NONE,
    TIER_WARNING,
    AttestationResult,
    Status,
    Violation,
)
from fedtee.errors import AttestationError, EvidenceFormatError, PolicyError, Reason

log = logging.getLogger(__name__)

POLICY_VERSION = 1
MAX_POLICY_BYTES = 1024 * 1024
MAX_REFERENCE_VALUES = 4096

_TOP_KEYS = frozenset({"version", "tee"})
_TEE_KEYS = frozenset(
    {
        "allow_simulated",
        "debug",
        "accepted_tcb",
        "warn_tcb",
        "max_evidence_age_s",
        "reference",
        "min_svn",
        "on_reset",
    }
)
ON_RESET_VALUES = ("reject", "reenrol")
_NEVER_ACCEPTED = frozenset({TcbStatus.UNSUPPORTED, TcbStatus.REVOKED})


@dataclass(frozen=True, kw_only=True)
class TeePolicy:
    tee: TeeType
    allow_simulated: bool = False
    debug_allowed: bool = False
    accepted_tcb: frozenset[TcbStatus] = frozenset({TcbStatus.UP_TO_DATE})
    warn_tcb: frozenset[TcbStatus] = frozenset()
    max_evidence_age: dt.timedelta | None = None
    reference: Mapping[str, frozenset[bytes]] = field(default_factory=dict)
    min_svn: Mapping[str, int] = field(default_factory=dict)
    # TPM only: a relying party that remembers a client's last quote (the enrolment gate)
    # refuses one from a later power cycle ("reject") or admits it and notes it ("reenrol").
    on_reset: str = "reject"


@dataclass(frozen=True, kw_only=True)
class Policy:
    tees: Mapping[TeeType, TeePolicy]
    version: int = POLICY_VERSION
    unsafe: bool = False

    def __post_init__(self) -> None:
        if not self.tees and not self.unsafe:
            raise PolicyError(
                "the policy accepts no TEE type: add a [tee.<type>] table",
                reason=Reason.POLICY_EMPTY,
            )
        object.__setattr__(self, "tees", MappingProxyType(dict(self.tees)))

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        if len(text.encode()) > MAX_POLICY_BYTES:
            raise PolicyError(f"policy file is larger than {MAX_POLICY_BYTES} bytes")
        try:
            raw = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise PolicyError(f"policy is not valid TOML: {exc}") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Policy:
        _no_unknown(raw, _TOP_KEYS, "policy")
        version = raw.get("version")
        # bool is an int in Python: `version = true` must not read as version 1.
        if isinstance(version, bool) or version != POLICY_VERSION:
            raise PolicyError(
                f"policy version is {version!r}; this fedtee reads version {POLICY_VERSION}"
            )
        tees_raw = raw.get("tee", {})
        if not isinstance(tees_raw, dict):
            raise PolicyError("'tee' must be a table of [tee.<type>] tables")
        tees: dict[TeeType, TeePolicy] = {}
        for name, body in tees_raw.items():
            try:
                tee = TeeType(name)
            except ValueError:
                known = ", ".join(t.value for t in TeeType)
                raise PolicyError(f"unknown TEE type [tee.{name}]; known: {known}") from None
            if not isinstance(body, dict):
                raise PolicyError(f"[tee.{name}] must be a table")
            tees[tee] = _tee_policy(tee, body)
        return cls(tees=tees, version=POLICY_VERSION)

    @classmethod
    def unsafe_allow_all(cls) -> Policy:
        """Accept any verified evidence of any type, sim and debug included. Development only."""
        log.warning(
            "UNSAFE policy in use: any verified evidence is accepted, including simulated "
            "and debug TEEs. Never use this in production."
        )
        tees = {
            tee: TeePolicy(
                tee=tee,
                allow_simulated=True,
                debug_allowed=True,
                accepted_tcb=frozenset(TcbStatus) - _NEVER_ACCEPTED,
            )
            for tee in TeeType
        }
        return cls(tees=tees, unsafe=True)


def _no_unknown(table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise PolicyError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}")


def _statuses(value: Any, where: str) -> frozenset[TcbStatus]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f"{where} must be a list of TCB status names")
    out = set()
    for v in value:
        try:
            out.add(TcbStatus(v))
        except ValueError:
            known = ", ".join(s.value for s in TcbStatus)
            raise PolicyError(f"{where}: unknown TCB status {v!r}; known: {known}") from None
    never = out & _NEVER_ACCEPTED
    if never:
        raise PolicyError(f"{where}: {sorted(s.value for s in never)} can never be accepted")
    return frozenset(out)


def _tee_policy(tee: TeeType, body: Mapping[str, Any]) -> TeePolicy:
    where = f"[tee.{tee.value}]"
    _no_unknown(body, _TEE_KEYS, where)
    allow_sim = body.get("allow_simulated", False)
    if not isinstance(allow_sim, bool):
        raise PolicyError(f"{where} allow_simulated must be true or false")
    if allow_sim and tee is not TeeType.SIM:
        raise PolicyError(f"{where} allow_simulated only applies to [tee.sim]")
    on_reset = body.get("on_reset", "reject")
    if "on_reset" in body and tee is not TeeType.TPM:
        raise PolicyError(f"{where} on_reset only applies to [tee.tpm]")
    if on_reset not in ON_RESET_VALUES:
        raise PolicyError(f'{where} on_reset must be "reject" or "reenrol"; got {on_reset!r}')
    debug = body.get("debug", "forbid")
    if debug not in ("forbid", "allow"):
        raise PolicyError(f'{where} debug must be "forbid" or "allow"; got {debug!r}')
    accepted = _statuses(body.get("accepted_tcb", ["UpToDate"]), f"{where} accepted_tcb")
    warn = _statuses(body.get("warn_tcb", []), f"{where} warn_tcb")
    age_raw = body.get("max_evidence_age_s")
    age: dt.timedelta | None = None
    if age_raw is not None:
        if not isinstance(age_raw, int) or isinstance(age_raw, bool) or age_raw <= 0:
            raise PolicyError(f"{where} max_evidence_age_s must be a positive integer")
        age = dt.timedelta(seconds=age_raw)
    reference: dict[str, frozenset[bytes]] = {}
    ref_raw = body.get("reference", {})
    if not isinstance(ref_raw, dict):
        raise PolicyError(f"[tee.{tee.value}.reference] must be a table")
    for name, values in ref_raw.items():
        if not isinstance(values, list) or not values:
            raise PolicyError(
                f"[tee.{tee.value}.reference] {name} must be a non-empty list of hex strings"
            )
        if len(values) > MAX_REFERENCE_VALUES:
            raise PolicyError(f"[tee.{tee.value}.reference] {name} has too many values")
        parsed = set()
        for v in values:
            if not isinstance(v, str):
                raise PolicyError(f"[tee.{tee.value}.reference] {name}: {v!r} is not a string")
            try:
                value = bytes.fromhex(v)
            except ValueError:
                raise PolicyError(f"[tee.{tee.value}.reference] {name}: {v!r} is not hex") from None
            if not value:
                raise PolicyError(f"[tee.{tee.value}.reference] {name}: empty reference value")
            parsed.add(value)
        key = name.lower()
        if key in reference:
            raise PolicyError(f"[tee.{tee.value}.reference] {name} is listed twice")
        reference[key] = frozenset(parsed)
    min_svn: dict[str, int] = {}
    svn_raw = body.get("min_svn", {})
    if not isinstance(svn_raw, dict):
        raise PolicyError(f"[tee.{tee.value}.min_svn] must be a table")
    for name, value in svn_raw.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(f"[tee.{tee.value}.min_svn] {name} must be a non-negative integer")
        min_svn[name] = value
    return TeePolicy(
        tee=tee,
        allow_simulated=allow_sim,
        debug_allowed=debug == "allow",
        accepted_tcb=accepted,
        warn_tcb=warn,
        max_evidence_age=age,
        reference=reference,
        min_svn=min_svn,
        on_reset=on_reset,
    )


# --- appraisal ------------------------------------------------------------------------


def appraise(verified: VerifiedEvidence, policy: Policy, *, now: dt.datetime) -> AttestationResult:
    """Appraise verified evidence against ``policy``: every violation, at once."""
    if not isinstance(verified, VerifiedEvidence):
        raise TypeError("only VerifiedEvidence can be appraised: verify the evidence first")
    violations: list[Violation] = []
    warnings: list[str] = list(verified.warnings)
    tee_policy = policy.tees.get(verified.tee)
    if tee_policy is None:
        allowed = ", ".join(sorted(t.value for t in policy.tees)) or "none"
        violations.append(
            Violation(Reason.TEE_NOT_ALLOWED, "tee", verified.tee.value, f"one of: {allowed}")
        )
        return _result(verified, policy, violations, warnings, now, tcb_warning=False)

    # Simulation is refused unless the policy says so in as many words.
    if not verified.hardware_backed and not tee_policy.allow_simulated:
        violations.append(
            Violation(
                Reason.SIM_NOT_ALLOWED,
                "hardware_backed",
                "false (simulated TEE)",
                "hardware-backed evidence, or allow_simulated = true",
            )
        )
    if verified.debug and not tee_policy.debug_allowed:
        violations.append(Violation(Reason.DEBUG_ENABLED, "debug", "true", "false"))

    tcb_warning = False
    status = verified.tcb_status
    if status is TcbStatus.UNSUPPORTED:
        violations.append(
            Violation(
                Reason.TCB_UNSUPPORTED,
                "tcb_status",
                status.value,
                "a TCB level known to the vendor's collateral",
            )
        )
    elif status is TcbStatus.REVOKED:
        violations.append(Violation(Reason.TCB_REVOKED, "tcb_status", status.value, "not revoked"))
    elif status is not TcbStatus.NOT_APPLICABLE and status not in tee_policy.accepted_tcb:
        if status in tee_policy.warn_tcb:
            tcb_warning = True
            warnings.append(f"tcb_status: {status.value} accepted with a warning")
        else:
            expected = sorted(s.value for s in tee_policy.accepted_tcb | tee_policy.warn_tcb)
            violations.append(
                Violation(
                    Reason.TCB_BELOW_MINIMUM, "tcb_status", status.value, f"one of {expected}"
                )
            )

    # Reference names are case-insensitive (from_toml lowercases them), while a verifier may
    # report mixed case (PSA/CCA ``sw:BL``); every value under a name must be allowed.
    by_name: dict[str, list[bytes]] = {}
    for measured_name, value in verified.measurements.items():
        by_name.setdefault(measured_name.lower(), []).append(value)
    for name, allowed_values in sorted(tee_policy.reference.items()):
        measured = by_name.get(name, [])
        found = next((v for v in measured if v not in allowed_values), None)
        if not measured:
            violations.append(
                Violation(
                    Reason.CLAIM_MISSING,
                    f"measurements.{name}",
                    "absent",
                    f"one of {len(allowed_values)} reference value(s)",
                )
            )
        elif found is not None:
            violations.append(
                Violation(
                    Reason.MEASUREMENT_NOT_ALLOWED,
                    f"measurements.{name}",
                    found.hex(),
                    "one of " + ", ".join(sorted(v.hex() for v in allowed_values)),
                )
            )

    for name, minimum in sorted(tee_policy.min_svn.items()):
        svn = verified.svns.get(name)
        if svn is None:
            violations.append(
                Violation(Reason.CLAIM_MISSING, f"svns.{name}", "absent", f">= {minimum}")
            )
        elif svn < minimum:
            violations.append(
                Violation(Reason.SVN_BELOW_MINIMUM, f"svns.{name}", str(svn), f">= {minimum}")
            )

    if tee_policy.max_evidence_age is not None:
        produced = verified.produced_at
        if produced is None:
            warnings.append("max_evidence_age_s: this evidence carries no time of its own")
        elif now - produced > tee_policy.max_evidence_age:
            violations.append(
                Violation(
                    Reason.EVIDENCE_TOO_OLD,
                    "produced_at",
                    produced.isoformat(),
                    f"within {int(tee_policy.max_evidence_age.total_seconds())} s of "
                    f"{now.isoformat()}",
                )
            )
    return _result(verified, policy, violations, warnings, now, tcb_warning=tcb_warning)


def _trust_vector(
    verified: VerifiedEvidence, violations: list[Violation], tcb_warning: bool
) -> dict[str, int]:
    reasons = {v.reason for v in violations}

    def tier(bad: set[Reason], warn: bool = False) -> int:
        if reasons & bad:
            return TIER_CONTRAINDICATED
        return TIER_WARNING if warn else TIER_AFFIRMING

    vector = {
        "instance-identity": tier({Reason.TEE_NOT_ALLOWED}),
        "executables": tier({Reason.MEASUREMENT_NOT_ALLOWED, Reason.CLAIM_MISSING}),
        "configuration": tier(
            {Reason.DEBUG_ENABLED, Reason.SVN_BELOW_MINIMUM, Reason.EVIDENCE_TOO_OLD}
        ),
        "hardware": tier(
            {
                Reason.SIM_NOT_ALLOWED,
                Reason.TCB_BELOW_MINIMUM,
                Reason.TCB_UNSUPPORTED,
                Reason.TCB_REVOKED,
            },
            warn=tcb_warning or not verified.hardware_backed,
        ),
        "runtime-opaque": TIER_NONE if not verified.hardware_backed else TIER_AFFIRMING,
        "file-system": TIER_NONE,
        "storage-opaque": TIER_NONE,
        "sourced-data": TIER_NONE,
    }
    return vector


def _result(
    verified: VerifiedEvidence,
    policy: Policy,
    violations: list[Violation],
    warnings: list[str],
    now: dt.datetime,
    *,
    tcb_warning: bool,
) -> AttestationResult:
    if violations:
        status = Status.CONTRAINDICATED
    elif tcb_warning or policy.unsafe or not verified.hardware_backed:
        # Simulated evidence is never plain "affirming": the result says so loudly.
        status = Status.WARNING
    else:
        status = Status.AFFIRMING
    if policy.unsafe:
        warnings.append("policy_unsafe: appraised with Policy.unsafe_allow_all()")
    return AttestationResult(
        status=status,
        tee=verified.tee,
        hardware_backed=verified.hardware_backed,
        code_identity=verified.code_identity,
        platform_id=verified.platform_id,
        claims=verified.claims,
        violations=tuple(violations),
        warnings=tuple(warnings),
        trust_vector=_trust_vector(verified, violations, tcb_warning),
        appraised_at=now,
        policy_unsafe=policy.unsafe,
    )


# --- verify + appraise in one call, for the enrolment gate and the CLI -----------------


@dataclass(frozen=True)
class Evaluation:
    result: AttestationResult
    verified: VerifiedEvidence | None


def rejected(
    error: AttestationError, *, tee: TeeType | None, now: dt.datetime
) -> AttestationResult:
    """A contraindicated result for evidence that failed before appraisal."""
    return AttestationResult(
        status=Status.CONTRAINDICATED,
        tee=tee,
        hardware_backed=False,
        violations=(Violation(error.reason, "evidence", error.message, "valid evidence"),),
        trust_vector={claim: TIER_CONTRAINDICATED for claim in ("instance-identity", "hardware")},
        appraised_at=now,
    )


def evaluate(
    evidence: Evidence,
    *,
    policy: Policy,
    trust: TrustAnchors,
    collateral: CollateralSource,
    now: dt.datetime,
    nonce: bytes | None = None,
    public_key: bytes | None = None,
    domain: bytes = DOMAIN_TAG,
) -> Evaluation:
    """Verify, check the nonce/key binding, then appraise. Never raises for bad evidence.

    Steps: (1) the policy must accept this TEE type at all, so unknown types are refused
    before any parsing; (2) the backend verifies signatures, chains and collateral at
    ``now``; (3) report_data must bind ``nonce`` and ``public_key`` when they are given, in
    ``domain`` (:data:`~fedtee.attest.binding.SERVER_DOMAIN_TAG` when a client checks the
    aggregator's evidence); (4) appraisal against the policy.
    """
    from fedtee.attest.registry import verifier_for

    if (nonce is None) != (public_key is None):
        # Checking half a binding would silently accept evidence bound to another key.
        raise ValueError("evaluate(): pass both nonce and public_key, or neither")
    tee = evidence.tee
    # 1. A TEE type the policy does not name is refused without touching its parser.
    if tee not in policy.tees:
        allowed = ", ".join(sorted(t.value for t in policy.tees)) or "none"
        result = AttestationResult(
            status=Status.CONTRAINDICATED,
            tee=tee,
            hardware_backed=False,
            violations=(Violation(Reason.TEE_NOT_ALLOWED, "tee", tee.value, f"one of: {allowed}"),),
            appraised_at=now,
        )
        return Evaluation(result=result, verified=None)
    try:
        # 2. verify
        verified = verifier_for(tee).verify(evidence, trust=trust, collateral=collateral, now=now)
        # 3. binding of nonce and key
        if nonce is not None and public_key is not None:
            check_report_data(
                found=verified.report_data, nonce=nonce, public_key=public_key, domain=domain
            )
    except AttestationError as exc:
        return Evaluation(result=rejected(exc, tee=tee, now=now), verified=None)
    except ImportError as exc:
        missing = EvidenceFormatError(
            f"the {tee.value} verifier is not available: {exc}",
            reason=Reason.EVIDENCE_TYPE_UNKNOWN,
        )
        return Evaluation(result=rejected(missing, tee=tee, now=now), verified=None)
    # 4. appraise
    return Evaluation(result=appraise(verified, policy, now=now), verified=verified)


__all__ = [
    "ON_RESET_VALUES",
    "POLICY_VERSION",
    "AttestationResult",
    "Evaluation",
    "Policy",
    "Status",
    "TeePolicy",
    "Violation",
    "appraise",
    "evaluate",
    "rejected",
]
