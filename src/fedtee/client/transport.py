"""What the client runtime needs from the network, as one small Protocol.

The runtime speaks only domain types (:mod:`fedtee.wire.messages`, re-exported here);
:mod:`fedtee.client.grpc_transport` maps them to the fedtee.v1 gRPC messages, and tests use
an in-memory fake. Connection trouble is raised as
:class:`ServerUnavailable` (the runtime retries it with backoff); anything the server says
"no" to comes back as data (``accepted=False`` with a stable reason) or as a typed
:class:`~fedtee.errors.ProtocolError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from fedtee import identity
from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import ProtocolError, Reason
from fedtee.ledger.receipts import SignedReceipt

# The message shapes are the wire layer's protobuf-free domain types, shared with the server.
from fedtee.wire.messages import (
    Challenge,
    Enrolment,
    ModelChunk,
    SubmitOutcome,
    Task,
    TaskKind,
    UploadStatus,
)


class ServerUnavailable(ProtocolError):
    """The server could not be reached or dropped the call; retrying may help."""

    default_reason = Reason.SERVER_UNAVAILABLE


class ServerBusy(ServerUnavailable):
    """The server is up but shedding load: every transfer slot taken (``server_busy``, with
    the server's ``retry_after_s`` hint) or gRPC's own RESOURCE_EXHAUSTED with no fedtee
    reason (past its concurrent-call limit; no hint): ask again later. The runtime retries it
    for a time budget of its own rather than a few attempts."""

    default_reason = Reason.SERVER_BUSY

    def __init__(
        self, message: str, *, reason: Reason | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, kw_only=True)
class Session:
    """An enrolled client: its credential and the TEE-bound key that proves possession."""

    client_id: str
    credential: bytes
    private_key: identity.PrivateKey
    expires_unix_ms: int


class Transport(Protocol):
    """The six calls of the fedtee.v1 Federation service that a client makes."""

    def get_challenge(
        self, *, client_id: str, tee: TeeType, aux: Mapping[str, bytes]
    ) -> Challenge: ...

    def enroll(
        self, *, client_id: str, nonce: bytes, public_key: bytes, evidence: Evidence
    ) -> Enrolment: ...

    def get_task(self, *, session: Session) -> Task: ...

    def download_model(
        self, *, session: Session, round: int, digest: bytes, offset: int
    ) -> Iterator[ModelChunk]: ...

    def submit_update(
        self,
        *,
        session: Session,
        receipt: SignedReceipt,
        size: int,
        chunks: Iterable[bytes | memoryview],
        encoding: str = "safetensors",
        offset: int = 0,
    ) -> SubmitOutcome:
        """Send ``size`` bytes of update (from ``offset`` when resuming) after the header."""
        ...

    def upload_status(self, *, session: Session, receipt_hash: bytes) -> UploadStatus:
        """How much of the upload of that signed receipt the server holds."""
        ...

    def close(self) -> None: ...


__all__ = [
    "Challenge",
    "Enrolment",
    "ModelChunk",
    "ServerUnavailable",
    "Session",
    "SubmitOutcome",
    "Task",
    "TaskKind",
    "Transport",
    "UploadStatus",
]
