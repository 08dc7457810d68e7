"""The enrolment gate: nonce in, evidence checked, credential out (or a recorded rejection).

Steps of :meth:`EnrolmentGate.enroll`, each failing with its own stable reason:

1. The client is not quarantined (CLIENT_QUARANTINED).
2. The nonce was issued by us, for this client and TEE type, is unused and unexpired
   (NONCE_UNKNOWN / NONCE_MISMATCH / NONCE_REUSED / NONCE_EXPIRED). It is burnt either way.
3. ``fedtee.attest.policy.evaluate``: verify the evidence (signatures, chains, collateral),
   check that ``report_data`` binds this nonce and this public key (REPORT_DATA_MISMATCH),
   appraise it against the policy (MEASUREMENT_NOT_ALLOWED, DEBUG_ENABLED, ...).
4. The TEE's challenge extension, if it has one (TPM: the credential-activation answer).
5. The identity key is ECDSA P-256 (KEY_NOT_BOUND).
6. TPM only: the quote comes from the same TPM power cycle as the client's last accepted
   one on this platform (``verify.tpm.check_counters``: resetCount and restartCount
   unchanged, clock not gone back), else TPM_RESET: the platform rebooted or its TPM was
   reset, so the code PCR may since have been extended by anything. The policy's
   ``[tee.tpm] on_reset = "reenrol"`` admits such a quote instead, and an operator can let
   one client back (``fedtee server forget-client``); either way the enrolment's
   attestation result in the ledger carries a warning saying so.
7. The platform is not enrolled under another client id (PLATFORM_ALREADY_ENROLLED).
8. Record the enrolment (store, with the TPM counters; then ledger with the attestation
   result) and issue a short-lived credential bound to the key.

Any rejection is recorded in the store and the ledger; an already enrolled client whose new
evidence verifies but is contraindicated (debug, unlisted code) is quarantined. Evidence that
does not verify proves nothing about who sent it, so it never quarantines the client id it
names (else anyone could lock an honest client out by sending garbage under its id). Nothing
here raises for bad evidence: the caller gets an :class:`~fedtee.wire.messages.Enrolment`
with ``accepted=False``.

``insecure_accept_any`` exists for ``fedtee eval attacks`` only: it skips steps 2 to 7 and
admits any evidence, to show what attestation stops. It is never read from a config file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fedtee import identity
from fedtee.attest.challenge import extension_for
from fedtee.attest.model import CollateralSource, Evidence, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.errors import (
    AttestationError,
    FedteeError,
    ProtocolError,
    Reason,
    VerificationError,
)
from fedtee.ledger.log import LedgerWriter
from fedtee.server.credentials import CredentialAuthority
from fedtee.server.store import StateStore, TpmCounters
from fedtee.wire.messages import Challenge, ChallengeRequest, EnrollRequest, Enrolment

log = logging.getLogger(__name__)

NONCE_BYTES = 32
Clock = Callable[[], datetime]

# Attestation failures that mean "this TEE is not what the policy trusts", as opposed to a
# stale nonce or a busy server: an enrolled client presenting them is quarantined, but only
# when the evidence itself verified (see the module docstring).
_QUARANTINE_ON = frozenset(
    {
        Reason.MEASUREMENT_NOT_ALLOWED,
        Reason.DEBUG_ENABLED,
        Reason.REPORT_DATA_MISMATCH,
        Reason.SIGNATURE_INVALID,
        Reason.CHAIN_UNTRUSTED_ROOT,
        Reason.SIM_NOT_ALLOWED,
        Reason.TEE_NOT_ALLOWED,
    }
)


class Evaluate(Protocol):
    """The shape of ``fedtee.attest.policy.evaluate`` (injected for unit tests)."""

    def __call__(
        self,
        evidence: Evidence,
        *,
        policy: Any,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
        nonce: bytes | None,
        public_key: bytes | None,
    ) -> Any: ...


def default_evaluate() -> Evaluate:
    module = importlib.import_module("fedtee.attest.policy")
    fn: Evaluate = module.evaluate
    return fn


def to_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _encode_kept(kept: Mapping[str, bytes]) -> bytes:
    return json.dumps({k: v.hex() for k, v in sorted(kept.items())}).encode()


def _decode_kept(raw: bytes) -> dict[str, bytes]:
    if not raw:
        return {}
    obj = json.loads(raw)  # written by us, stored in our own database
    return {str(k): bytes.fromhex(v) for k, v in obj.items()}


def _status_str(status: Any) -> str:
    return str(getattr(status, "value", status))


def _result_json(result: Any) -> str:
    raw = result.to_json()
    return raw if isinstance(raw, str) else json.dumps(raw, sort_keys=True)


@dataclass(frozen=True, kw_only=True)
class GateSettings:
    nonce_ttl_ms: int = 60_000
    credential_ttl_ms: int = 600_000


class EnrolmentGate:
    def __init__(
        self,
        *,
        federation_id: str,
        store: StateStore,
        ledger: LedgerWriter,
        authority: CredentialAuthority,
        policy: Any,
        trust: TrustAnchors,
        collateral: CollateralSource,
        clock: Clock,
        settings: GateSettings = GateSettings(),
        evaluate: Evaluate | None = None,
        insecure_accept_any: bool = False,
    ) -> None:
        self.federation_id = federation_id
        self._store = store
        self._ledger = ledger
        self._authority = authority
        self._policy = policy
        self._trust = trust
        self._collateral = collateral
        self._clock = clock
        self._settings = settings
        self._evaluate = evaluate
        self._insecure = insecure_accept_any
        if insecure_accept_any:
            log.warning(
                "INSECURE: the enrolment gate admits ANY evidence (attestation is off); "
                "for evaluation only"
            )

    # --- challenge -------------------------------------------------------------------------

    def challenge(self, req: ChallengeRequest) -> Challenge:
        """A fresh single-use nonce (plus the TEE extension's challenge, e.g. TPM)."""
        now = self._clock()
        nonce = secrets.token_bytes(NONCE_BYTES)
        to_client: Mapping[str, bytes] = {}
        kept: Mapping[str, bytes] = {}
        ext = extension_for(req.tee)
        if ext is not None:
            try:
                prepared = ext.prepare(nonce=nonce, request=req.aux, trust=self._trust, now=now)
            except AttestationError as exc:
                # e.g. a TPM whose EK does not chain to a trusted CA: refused before any nonce.
                self.record_rejection(req.client_id, exc, now_ms=to_ms(now))
                raise
            to_client, kept = prepared.to_client, prepared.kept
        expires = to_ms(now) + self._settings.nonce_ttl_ms
        self._store.issue_nonce(
            value=nonce,
            tee=req.tee.value,
            expires_ms=expires,
            client_id=req.client_id,
            context=_encode_kept(kept),
        )
        return Challenge(
            nonce=nonce, expires_unix_ms=expires, federation_id=self.federation_id, aux=to_client
        )

    # --- enrolment -------------------------------------------------------------------------

    def enroll(self, req: EnrollRequest) -> Enrolment:
        now = self._clock()
        now_ms = to_ms(now)
        result_json = ""
        verified_but_refused = False
        try:
            client = self._store.get_client(req.client_id)
            if client is not None and client.quarantined:
                raise VerificationError(
                    f"client {req.client_id!r} is quarantined ({client.quarantine_reason})",
                    reason=Reason.CLIENT_QUARANTINED,
                )
            if self._insecure:
                return self._admit_unverified(req, now_ms=now_ms)
            record = self._store.consume_nonce(req.nonce, now_ms=now_ms)
            if record.client_id not in (None, req.client_id) or record.tee != req.evidence.tee:
                raise VerificationError(
                    f"nonce was issued to {record.client_id!r} for {record.tee!r}",
                    reason=Reason.NONCE_MISMATCH,
                )
            evaluate = self._evaluate or default_evaluate()
            evaluation = evaluate(
                req.evidence,
                policy=self._policy,
                trust=self._trust,
                collateral=self._collateral,
                now=now,
                nonce=req.nonce,
                public_key=req.public_key,
            )
            result = evaluation.result
            result_json = _result_json(result)
            status = _status_str(result.status)
            if status not in ("affirming", "warning") or evaluation.verified is None:
                violations = tuple(result.violations)
                reason = violations[0].reason if violations else Reason.INTERNAL
                detail = "; ".join(
                    f"{v.reason.value}: {v.field} is {v.found}, expected {v.expected}"
                    for v in violations
                )
                verified_but_refused = evaluation.verified is not None
                raise VerificationError(detail or "attestation is contraindicated", reason=reason)
            ext = extension_for(req.evidence.tee)
            if ext is not None:
                ext.check(
                    evidence=req.evidence,
                    verified=evaluation.verified,
                    kept=_decode_kept(record.context),
                )
            identity.load_public_key(req.public_key)
            verified = evaluation.verified
            counters: TpmCounters | None = None
            if verified.tee is TeeType.TPM:
                counters, note = self._check_tpm_counters(req.client_id, verified)
                if note:
                    result = dataclasses.replace(result, warnings=(*result.warnings, note))
                    result_json = _result_json(result)
            self._store.enroll_client(
                federation_id=self.federation_id,
                client_id=req.client_id,
                public_key=req.public_key,
                tee=req.evidence.tee.value,
                platform_id=verified.platform_id,
                measurement=verified.code_identity,
                hardware_backed=verified.hardware_backed,
                credential_expires_ms=now_ms + self._settings.credential_ttl_ms,
                now_ms=now_ms,
                tpm_counters=counters,
            )
            self._ledger.enrolment(
                client_id=req.client_id,
                public_key=req.public_key,
                tee=req.evidence.tee.value,
                hardware_backed=verified.hardware_backed,
                attestation_json=result_json,
                now_ms=now_ms,
            )
            token, cred = self._authority.issue(
                client_id=req.client_id,
                public_key=req.public_key,
                tee=req.evidence.tee.value,
                hardware_backed=verified.hardware_backed,
                code_identity=verified.code_identity,
                status=status,
                now_ms=now_ms,
                ttl_ms=self._settings.credential_ttl_ms,
            )
            log.info(
                "enrolled %s (%s%s, %s)",
                req.client_id,
                req.evidence.tee.value,
                "" if verified.hardware_backed else ", SIMULATED, not hardware-backed",
                status,
            )
            return Enrolment(
                accepted=True,
                message=f"enrolled; attestation {status}",
                credential=token,
                credential_expires_unix_ms=cred.expires_ms,
                attestation_result_json=result_json,
            )
        except (AttestationError, ProtocolError) as exc:
            return self._reject(
                req, exc, now_ms=now_ms, result_json=result_json, quarantine=verified_but_refused
            )
        except FedteeError as exc:
            if exc.reason in (Reason.STORAGE_FAILED, Reason.STORAGE_CORRUPT, Reason.INTERNAL):
                raise
            return self._reject(req, exc, now_ms=now_ms, result_json=result_json, quarantine=False)

    def _check_tpm_counters(
        self, client_id: str, verified: VerifiedEvidence
    ) -> tuple[TpmCounters, str]:
        """Step 6: the counters to store, and a warning for the result ("" when none).

        Counters are compared only with those of the same platform (EK): a client id that
        moved to another TPM starts afresh there (step 7 still stops two ids on one TPM).
        """
        from fedtee.attest.verify.tpm import check_counters

        claims = verified.claims
        try:
            current = TpmCounters(
                platform_id=verified.platform_id,
                ak_name=bytes.fromhex(str(claims.get("ak_name", ""))),
                reset_count=int(claims["reset_count"]),
                restart_count=int(claims["restart_count"]),
                clock=int(claims["clock"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VerificationError(
                f"TPM claims lack counters: {exc}", reason=Reason.TPM_RESET
            ) from exc
        previous = self._store.tpm_counters(client_id)
        if previous is None or previous.platform_id != verified.platform_id:
            return current, ""
        if previous.cleared_ms is not None:
            return current, (
                f"tpm_counters_cleared: an operator cleared this client's TPM counters at "
                f"{previous.cleared_ms} (fedtee server forget-client); counters were "
                f"{previous.as_claims()}, now {current.as_claims()}"
            )
        try:
            check_counters(previous.as_claims(), claims)
        except VerificationError as exc:
            if self._on_reset() == "reenrol":
                return current, (
                    f'tpm_reset: {exc.message}; re-enrolled under on_reset = "reenrol"'
                )
            raise VerificationError(
                f"{exc.message} since this client's enrolment at {previous.recorded_ms}: the "
                "platform rebooted or its TPM was reset since it attested, so its code PCR "
                "may have been re-extended by anything. To let it back, an operator runs "
                "`fedtee server forget-client`, or the policy sets [tee.tpm] "
                'on_reset = "reenrol"',
                reason=Reason.TPM_RESET,
            ) from exc
        return current, ""

    def _on_reset(self) -> str:
        tees = getattr(self._policy, "tees", {})
        return str(getattr(tees.get(TeeType.TPM), "on_reset", "reject"))

    def _admit_unverified(self, req: EnrollRequest, *, now_ms: int) -> Enrolment:
        """INSECURE (evaluation only): enrol without looking at nonce or evidence."""
        identity.load_public_key(req.public_key)
        result_json = json.dumps({"status": "insecure_unverified", "tee": req.evidence.tee.value})
        self._store.enroll_client(
            federation_id=self.federation_id,
            client_id=req.client_id,
            public_key=req.public_key,
            tee=req.evidence.tee.value,
            platform_id=hashlib.sha256(req.public_key).digest(),
            measurement=b"",
            hardware_backed=False,
            credential_expires_ms=now_ms + self._settings.credential_ttl_ms,
            now_ms=now_ms,
        )
        self._ledger.enrolment(
            client_id=req.client_id,
            public_key=req.public_key,
            tee=req.evidence.tee.value,
            hardware_backed=False,
            attestation_json=result_json,
            now_ms=now_ms,
        )
        token, cred = self._authority.issue(
            client_id=req.client_id,
            public_key=req.public_key,
            tee=req.evidence.tee.value,
            hardware_backed=False,
            code_identity=b"",
            status="insecure_unverified",
            now_ms=now_ms,
            ttl_ms=self._settings.credential_ttl_ms,
        )
        log.warning("INSECURE: enrolled %s without verifying its evidence", req.client_id)
        return Enrolment(
            accepted=True,
            message="enrolled WITHOUT attestation (insecure evaluation server)",
            credential=token,
            credential_expires_unix_ms=cred.expires_ms,
            attestation_result_json=result_json,
        )

    def record_rejection(
        self, client_id: str | None, exc: FedteeError, *, now_ms: int, round: int | None = None
    ) -> None:
        """Store and ledger entry for a refusal (also used by the service for wire errors)."""
        log.warning("request of %s rejected: %s", client_id, exc)
        self._store.record_rejection(
            federation_id=self.federation_id,
            reason=exc.reason,
            message=exc.message,
            now_ms=now_ms,
            client_id=client_id,
            round=round,
        )
        self._ledger.rejection(
            reason=exc.reason,
            message=exc.message,
            now_ms=now_ms,
            client_id=client_id,
            round=round,
        )

    def _reject(
        self,
        req: EnrollRequest,
        exc: FedteeError,
        *,
        now_ms: int,
        result_json: str,
        quarantine: bool,
    ) -> Enrolment:
        self.record_rejection(req.client_id, exc, now_ms=now_ms)
        client = self._store.get_client(req.client_id)
        if (
            quarantine
            and client is not None
            and not client.quarantined
            and exc.reason in _QUARANTINE_ON
        ):
            self._store.quarantine(req.client_id, reason=exc.reason, message=exc.message)
        return Enrolment(
            accepted=False,
            reason=exc.reason.value,
            message=exc.message,
            attestation_result_json=result_json,
        )


__all__ = ["Clock", "Evaluate", "EnrolmentGate", "GateSettings", "default_evaluate", "to_ms"]
