"""One exception tree for all of fedtee, and the stable reason codes it carries.

Every rejection in fedtee carries a :class:`Reason`: a stable, lower-case code that tests,
the ledger and operators rely on. Codes are never renamed or reused; new ones are appended
to their area's block.

Exception tree::

    FedteeError                      every error fedtee raises on purpose (has .reason)
    ├── ConfigError                  a config / policy / CLI input is wrong
    │   └── PolicyError              a policy file is malformed, unknown key, allows nothing
    ├── AttestationError             evidence could not be accepted
    │   ├── EvidenceFormatError      parse step: malformed, truncated, bad version, bad size
    │   ├── VerificationError        verify step: signature, chain, revocation, binding
    │   ├── CollateralError          collateral missing, expired, badly signed, mismatched
    │   └── DeviceError              attester side: TEE device absent or failing
    ├── ProtocolError                a peer sent something malformed, oversized or out of order
    │   ├── CredentialError          credential missing, expired, forged, or not this client's
    │   └── UpdateRejected           model update or receipt rejected before aggregation
    ├── LedgerError                  ledger malformed, chain broken, checkpoint bad
    └── StorageError                 state or artifact store failure (disk full, corrupt file)

Rules: errors raised across a layer boundary are re-raised as one of these with
``raise X(...) from exc``; messages say what was found and what was expected.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Stable reason codes. Append only; never rename a value."""

    # --- generic -----------------------------------------------------------------------
    INTERNAL = "internal"
    CONFIG_INVALID = "config_invalid"

    # --- evidence parsing --------------------------------------------------------------
    EVIDENCE_TYPE_UNKNOWN = "evidence_type_unknown"
    EVIDENCE_MALFORMED = "evidence_malformed"
    EVIDENCE_TRUNCATED = "evidence_truncated"
    EVIDENCE_TRAILING_DATA = "evidence_trailing_data"
    EVIDENCE_TOO_LARGE = "evidence_too_large"
    EVIDENCE_VERSION_UNSUPPORTED = "evidence_version_unsupported"
    EVIDENCE_FIELD_INVALID = "evidence_field_invalid"

    # --- evidence verification ---------------------------------------------------------
    SIGNATURE_INVALID = "signature_invalid"
    QE_REPORT_SIGNATURE_INVALID = "qe_report_signature_invalid"
    ATTESTATION_KEY_NOT_BOUND = "attestation_key_not_bound"
    CERT_MALFORMED = "cert_malformed"
    CHAIN_INVALID = "chain_invalid"
    CHAIN_UNTRUSTED_ROOT = "chain_untrusted_root"
    CERT_EXPIRED = "cert_expired"
    CERT_NOT_YET_VALID = "cert_not_yet_valid"
    CERT_REVOKED = "cert_revoked"
    CRL_INVALID = "crl_invalid"
    CRL_STALE = "crl_stale"
    TCB_MISMATCH = "tcb_mismatch"
    PCR_DIGEST_MISMATCH = "pcr_digest_mismatch"
    AK_NOT_BOUND = "ak_not_bound"
    KEY_NOT_BOUND = "key_not_bound"
    REPORT_DATA_MISMATCH = "report_data_mismatch"
    AK_ATTRIBUTES_INVALID = "ak_attributes_invalid"
    QE_IDENTITY_MISMATCH = "qe_identity_mismatch"

    # --- collateral --------------------------------------------------------------------
    COLLATERAL_MISSING = "collateral_missing"
    COLLATERAL_MALFORMED = "collateral_malformed"
    COLLATERAL_EXPIRED = "collateral_expired"
    COLLATERAL_NOT_YET_VALID = "collateral_not_yet_valid"
    COLLATERAL_SIGNATURE_INVALID = "collateral_signature_invalid"
    COLLATERAL_MISMATCH = "collateral_mismatch"
    COLLATERAL_FETCH_DISABLED = "collateral_fetch_disabled"
    COLLATERAL_FETCH_FAILED = "collateral_fetch_failed"

    # --- appraisal (policy) ------------------------------------------------------------
    POLICY_INVALID = "policy_invalid"
    POLICY_EMPTY = "policy_empty"
    TEE_NOT_ALLOWED = "tee_not_allowed"
    SIM_NOT_ALLOWED = "sim_not_allowed"
    MEASUREMENT_NOT_ALLOWED = "measurement_not_allowed"
    DEBUG_ENABLED = "debug_enabled"
    TCB_BELOW_MINIMUM = "tcb_below_minimum"
    TCB_UNSUPPORTED = "tcb_unsupported"
    TCB_REVOKED = "tcb_revoked"
    SVN_BELOW_MINIMUM = "svn_below_minimum"
    EVIDENCE_TOO_OLD = "evidence_too_old"
    CLAIM_MISSING = "claim_missing"
    TPM_RESET = "tpm_reset"

    # --- enrolment / freshness ---------------------------------------------------------
    NONCE_UNKNOWN = "nonce_unknown"
    NONCE_EXPIRED = "nonce_expired"
    NONCE_REUSED = "nonce_reused"
    NONCE_MISMATCH = "nonce_mismatch"
    PLATFORM_ALREADY_ENROLLED = "platform_already_enrolled"
    CLIENT_QUARANTINED = "client_quarantined"
    SERVER_NOT_ATTESTED = "server_not_attested"  # mutual attestation required, none offered

    # --- credentials and wire ----------------------------------------------------------
    CREDENTIAL_MISSING = "credential_missing"
    CREDENTIAL_INVALID = "credential_invalid"
    CREDENTIAL_EXPIRED = "credential_expired"
    CREDENTIAL_WRONG_CLIENT = "credential_wrong_client"
    MESSAGE_TOO_LARGE = "message_too_large"
    MESSAGE_MALFORMED = "message_malformed"
    STREAM_STALLED = "stream_stalled"
    ROUND_CLOSED = "round_closed"
    NOT_SELECTED = "not_selected"
    SERVER_UNAVAILABLE = "server_unavailable"
    SERVER_BUSY = "server_busy"  # every transfer slot taken: ask again after retry_after
    MODEL_DIGEST_MISMATCH = "model_digest_mismatch"

    # --- updates and receipts ----------------------------------------------------------
    RECEIPT_MALFORMED = "receipt_malformed"
    RECEIPT_SIGNATURE_INVALID = "receipt_signature_invalid"
    RECEIPT_ROUND_MISMATCH = "receipt_round_mismatch"
    RECEIPT_FEDERATION_MISMATCH = "receipt_federation_mismatch"
    RECEIPT_CLIENT_MISMATCH = "receipt_client_mismatch"
    RECEIPT_MODEL_MISMATCH = "receipt_model_mismatch"
    RECEIPT_MEASUREMENT_MISMATCH = "receipt_measurement_mismatch"
    RECEIPT_REPLAYED = "receipt_replayed"
    UPDATE_DIGEST_MISMATCH = "update_digest_mismatch"
    UPDATE_MALFORMED = "update_malformed"
    UPDATE_SHAPE_MISMATCH = "update_shape_mismatch"
    UPDATE_NONFINITE = "update_nonfinite"
    UPDATE_NORM_EXCEEDED = "update_norm_exceeded"
    UPDATE_DUPLICATE = "update_duplicate"
    UPLOAD_OFFSET_MISMATCH = "upload_offset_mismatch"  # resume offset != bytes the server holds

    # --- ledger and storage ------------------------------------------------------------
    LEDGER_MALFORMED = "ledger_malformed"
    LEDGER_CHAIN_BROKEN = "ledger_chain_broken"
    LEDGER_SIGNATURE_INVALID = "ledger_signature_invalid"
    LEDGER_LINEAGE_BROKEN = "ledger_lineage_broken"
    STORAGE_FAILED = "storage_failed"
    STORAGE_CORRUPT = "storage_corrupt"

    # --- attester side -----------------------------------------------------------------
    DEVICE_ABSENT = "device_absent"
    DEVICE_FAILED = "device_failed"
    DEVICE_BUSY = "device_busy"


class FedteeError(Exception):
    """Base of every error fedtee raises on purpose. Always carries a stable :class:`Reason`."""

    default_reason: Reason = Reason.INTERNAL

    def __init__(self, message: str, *, reason: Reason | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason: Reason = reason if reason is not None else self.default_reason

    def __str__(self) -> str:
        return f"[{self.reason.value}] {self.message}"


class ConfigError(FedteeError):
    default_reason = Reason.CONFIG_INVALID


class PolicyError(ConfigError):
    default_reason = Reason.POLICY_INVALID


class AttestationError(FedteeError):
    default_reason = Reason.EVIDENCE_MALFORMED


class EvidenceFormatError(AttestationError):
    default_reason = Reason.EVIDENCE_MALFORMED


class VerificationError(AttestationError):
    default_reason = Reason.SIGNATURE_INVALID


class CollateralError(AttestationError):
    default_reason = Reason.COLLATERAL_MISSING


class DeviceError(AttestationError):
    default_reason = Reason.DEVICE_ABSENT


class ProtocolError(FedteeError):
    default_reason = Reason.MESSAGE_MALFORMED


class CredentialError(ProtocolError):
    default_reason = Reason.CREDENTIAL_INVALID


class UpdateRejected(ProtocolError):
    default_reason = Reason.UPDATE_MALFORMED


class LedgerError(FedteeError):
    default_reason = Reason.LEDGER_MALFORMED


class StorageError(FedteeError):
    default_reason = Reason.STORAGE_FAILED


__all__ = [
    "AttestationError",
    "CollateralError",
    "ConfigError",
    "CredentialError",
    "DeviceError",
    "EvidenceFormatError",
    "FedteeError",
    "LedgerError",
    "PolicyError",
    "ProtocolError",
    "Reason",
    "StorageError",
    "UpdateRejected",
    "VerificationError",
]
