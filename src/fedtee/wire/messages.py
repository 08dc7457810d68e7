"""Domain-side shapes of the fedtee.v1 messages, free of protobuf.

Field names follow the .proto; :mod:`fedtee.wire.serde` converts in both directions. The
client runtime's transport types (:mod:`fedtee.client.transport`) have the same names and
fields, so a transport can pass these straight through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from fedtee.attest.model import Evidence, TeeType
from fedtee.ledger.receipts import SignedReceipt


class TaskKind(Enum):
    TRAIN = 1
    WAIT = 2
    FINISHED = 3
    REATTEST = 4


@dataclass(frozen=True, kw_only=True)
class ChallengeRequest:
    client_id: str
    tee: TeeType
    aux: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Challenge:
    nonce: bytes
    expires_unix_ms: int
    federation_id: str
    aux: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class EnrollRequest:
    client_id: str
    nonce: bytes
    public_key: bytes
    evidence: Evidence


@dataclass(frozen=True, kw_only=True)
class Enrolment:
    accepted: bool
    reason: str = ""
    message: str = ""
    credential: bytes = b""
    credential_expires_unix_ms: int = 0
    attestation_result_json: str = ""


@dataclass(frozen=True, kw_only=True)
class Task:
    kind: TaskKind
    round: int = 0
    global_model_digest: bytes = b""
    global_model_size: int = 0
    retry_after_ms: int = 0
    config: Mapping[str, str] = field(default_factory=dict)
    deadline_unix_ms: int = 0
    federation_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ModelRequest:
    round: int
    digest: bytes
    offset: int = 0


@dataclass(frozen=True, kw_only=True)
class ModelChunk:
    data: bytes | memoryview  # a view of the received message (fedtee.wire.serde)
    offset: int
    total_size: int


@dataclass(frozen=True, kw_only=True)
class UpdateHeader:
    receipt: SignedReceipt
    size: int  # the whole update's bytes
    encoding: str = "safetensors"  # a fedtee.codec.Encoding value
    offset: int = 0  # where the data that follows starts (resuming an interrupted upload)


@dataclass(frozen=True, kw_only=True)
class UploadStatus:
    """How much of an interrupted upload the server holds (0 and 0 when nothing)."""

    committed: int
    size: int


@dataclass(frozen=True, kw_only=True)
class SubmitOutcome:
    accepted: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class ServerEvidenceRequest:
    """Mutual attestation: a client's fresh nonce, and on a second request its answer to the
    server TEE's challenge extension (TPM: the MakeCredential blobs)."""

    nonce: bytes
    aux: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ServerEvidence:
    """The aggregator's evidence, bound to the request's nonce and its TLS key ``public_key``
    (DER SPKI); ``challenge_request`` is what a client needs to prepare the TEE's challenge
    extension (TPM: EK certificate, EK and AK public areas), empty when none applies."""

    evidence: Evidence
    public_key: bytes
    challenge_request: Mapping[str, bytes] = field(default_factory=dict)


__all__ = [
    "Challenge",
    "ChallengeRequest",
    "EnrollRequest",
    "Enrolment",
    "ModelChunk",
    "ModelRequest",
    "ServerEvidence",
    "ServerEvidenceRequest",
    "SubmitOutcome",
    "Task",
    "TaskKind",
    "UpdateHeader",
    "UploadStatus",
]
