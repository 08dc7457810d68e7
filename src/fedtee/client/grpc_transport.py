"""The client :class:`~fedtee.client.transport.Transport` over fedtee.v1 gRPC with TLS.

Messages are converted only by :mod:`fedtee.wire.serde` (which bounds what it reads); every
authenticated call carries the credential and a fresh proof of possession of the TEE-bound
key (:func:`fedtee.wire.auth.client_metadata`); channel options come from
:mod:`fedtee.wire.limits`. gRPC UNAVAILABLE / DEADLINE_EXCEEDED / CANCELLED become
:class:`~fedtee.client.transport.ServerUnavailable` (the runtime retries them with backoff);
any other status becomes a typed error carrying the server's ``fedtee-reason`` trailer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc

from fedtee.attest.model import Evidence, TeeType
from fedtee.client.transport import (
    Challenge,
    Enrolment,
    ModelChunk,
    ServerBusy,
    ServerUnavailable,
    Session,
    SubmitOutcome,
    Task,
)
from fedtee.errors import CredentialError, ProtocolError, Reason, UpdateRejected
from fedtee.ledger.receipts import SignedReceipt
from fedtee.wire import auth, serde
from fedtee.wire.limits import DEFAULT_LIMITS, WireLimits
from fedtee.wire.messages import (
    ChallengeRequest,
    EnrollRequest,
    ModelRequest,
    ServerEvidence,
    ServerEvidenceRequest,
    UpdateHeader,
    UploadStatus,
)
from fedtee.wire.stubs import federation_stub

_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)
_SERVICE = "/fedtee.v1.Federation/"
CALL_TIMEOUT_S = 60.0
STREAM_TIMEOUT_S = 600.0


def _trailing(error: grpc.RpcError, wanted: str) -> str | None:
    """The value of trailing metadata key ``wanted`` of a failed call, if it has one."""
    trailing_metadata = getattr(error, "trailing_metadata", None)
    trailing: Any = trailing_metadata() if callable(trailing_metadata) else None
    for key, value in trailing or ():
        if key == wanted:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _reason_of(error: grpc.RpcError) -> Reason | None:
    text = _trailing(error, auth.REASON_KEY)
    try:
        return None if text is None else Reason(text)
    except ValueError:
        return None


def _retry_after_s(error: grpc.RpcError) -> float | None:
    """The server's retry_after hint of a server_busy refusal, bounded to 0.01..60 s."""
    text = _trailing(error, auth.RETRY_AFTER_KEY)
    try:
        ms = None if text is None else int(text[:12])
    except ValueError:
        return None
    return None if ms is None else min(max(ms, 10), 60_000) / 1000


def translate(method: str, error: grpc.RpcError) -> Exception:
    """A gRPC failure as a typed fedtee error (ServerUnavailable when retrying may help)."""
    code_fn = getattr(error, "code", None)
    details_fn = getattr(error, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else str(error)
    name = code.name if code is not None else "UNKNOWN"
    if code in _RETRYABLE:
        return ServerUnavailable(f"{method}: {name}: {details}")
    reason = _reason_of(error)
    message = f"{method}: {name}: {details}"
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and reason is None:
        # gRPC's own load shedding ("Concurrent RPC limit exceeded!"), not a fedtee refusal
        # (those carry a reason, e.g. message_too_large): the server is busy, ask again.
        return ServerBusy(message)
    if reason is Reason.SERVER_BUSY:  # every transfer slot taken: ask again when told
        return ServerBusy(message, retry_after_s=_retry_after_s(error))
    if code is grpc.StatusCode.UNAUTHENTICATED or (
        reason is not None and reason.value.startswith("credential_")
    ):
        return CredentialError(message, reason=reason)
    if reason is not None and reason.value.startswith(("receipt_", "update_")):
        return UpdateRejected(message, reason=reason)
    return ProtocolError(message, reason=reason or Reason.MESSAGE_MALFORMED)


class GrpcTransport:
    """One TLS channel to the federation server.

    Made by :meth:`connect`, it opens a fresh connection after each upload: gRPC keeps a
    connection's read buffer as large as the last burst it read (about a chunk), at both ends,
    for as long as the connection lives, so a server's idle connections from clients that had
    uploaded held a megabyte each (bench_server_memory: 100 clients at a 3.8 MiB model peaked
    at 242 MiB with one transfer at a time, 149 MiB with a fresh connection after each upload).
    A new TLS connection costs one handshake per round."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        limits: WireLimits = DEFAULT_LIMITS,
        reconnect: Callable[[], grpc.Channel] | None = None,
    ) -> None:
        self._channel = channel
        self._reconnect = reconnect  # a fresh channel after each upload (None: keep this one)
        self._stub: Any = self._stub_of(channel)
        self._limits = limits

    @staticmethod
    def _stub_of(channel: grpc.Channel) -> Any:
        return federation_stub(channel)

    def _fresh_connection(self) -> None:
        if self._reconnect is None:
            return
        old, self._channel = self._channel, self._reconnect()
        self._stub = self._stub_of(self._channel)
        old.close()

    @classmethod
    def connect(
        cls,
        *,
        address: str,
        ca_pem: bytes,
        server_name: str | None = None,
        limits: WireLimits = DEFAULT_LIMITS,
    ) -> GrpcTransport:
        options: list[tuple[str, Any]] = list(limits.grpc_options())
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        # A connection of its own, not one shared with another channel to the same address
        # in this process: replaced after each upload.
        options.append(("grpc.use_local_subchannel_pool", 1))
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)

        def channel() -> grpc.Channel:
            return grpc.secure_channel(address, credentials, options=options)

        return cls(channel(), limits=limits, reconnect=channel)

    def _metadata(self, session: Session, method: str) -> list[tuple[str, str | bytes]]:
        return list(
            auth.client_metadata(
                method=method,
                credential=session.credential,
                private_key=session.private_key,
                now_ms=int(time.time() * 1000),
            )
        )

    def get_challenge(self, *, client_id: str, tee: TeeType, aux: Mapping[str, bytes]) -> Challenge:
        request = serde.challenge_request_to_proto(
            ChallengeRequest(client_id=client_id, tee=tee, aux=dict(aux))
        )
        try:
            reply = self._stub.GetChallenge(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise translate("GetChallenge", exc) from exc
        return serde.challenge_from_proto(reply, limits=self._limits)

    def enroll(
        self, *, client_id: str, nonce: bytes, public_key: bytes, evidence: Evidence
    ) -> Enrolment:
        request = serde.enroll_request_to_proto(
            EnrollRequest(
                client_id=client_id, nonce=nonce, public_key=public_key, evidence=evidence
            )
        )
        try:
            reply = self._stub.Enroll(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise translate("Enroll", exc) from exc
        return serde.enrolment_from_proto(reply)

    def get_task(self, *, session: Session) -> Task:
        from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb

        try:
            reply = self._stub.GetTask(
                pb.TaskRequest(client_id=session.client_id),
                metadata=self._metadata(session, _SERVICE + "GetTask"),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            raise translate("GetTask", exc) from exc
        return serde.task_from_proto(reply, limits=self._limits)

    def download_model(
        self, *, session: Session, round: int, digest: bytes, offset: int
    ) -> Iterator[ModelChunk]:
        request = serde.model_request_to_proto(
            ModelRequest(round=round, digest=digest, offset=offset)
        )
        try:
            stream = self._stub.DownloadModel(
                request,
                metadata=self._metadata(session, _SERVICE + "DownloadModel"),
                timeout=STREAM_TIMEOUT_S,
            )
            for chunk in stream:
                yield serde.model_chunk_from_proto(chunk, limits=self._limits)
        except grpc.RpcError as exc:
            raise translate("DownloadModel", exc) from exc

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
        answered = threading.Event()
        taken: list[bool] = []

        def messages() -> Iterator[Any]:
            yield serde.update_header_to_proto(
                UpdateHeader(receipt=receipt, size=size, encoding=encoding, offset=offset)
            )
            # The data only once the server has taken the upload (auth.UPLOAD_GO_KEY): until
            # then a queued upload holds no chunk of it in the server's memory. A refused
            # one (no go) sends none.
            answered.wait(STREAM_TIMEOUT_S)
            if taken:
                for chunk in chunks:
                    yield serde.update_data_to_wire(chunk)

        try:
            call = self._stub.SubmitUpdate.future(
                messages(),
                metadata=self._metadata(session, _SERVICE + "SubmitUpdate"),
                timeout=STREAM_TIMEOUT_S,
            )
            try:
                # The server's go, or the call's end (a refusal).
                if auth.upload_go(call.initial_metadata()):
                    taken.append(True)
            finally:
                answered.set()
            reply = call.result()
        except grpc.RpcError as exc:
            error = translate("SubmitUpdate", exc)
            if isinstance(error, UpdateRejected):
                # A rejection the server sent as a status: report it like a reply.
                return SubmitOutcome(
                    accepted=False, reason=error.reason.value, message=error.message
                )
            raise error from exc
        finally:
            self._fresh_connection()
        return serde.submit_outcome_from_proto(reply)

    def get_server_evidence(self, *, nonce: bytes, aux: Mapping[str, bytes]) -> ServerEvidence:
        """Mutual attestation: the server's evidence over ``nonce`` and its TLS key.

        Only meaningful on a channel pinned to the server's certificate (``connect`` with
        ``ca_pem`` = that certificate, see :mod:`fedtee.client.server_attestation`)."""
        request = serde.server_evidence_request_to_proto(
            ServerEvidenceRequest(nonce=nonce, aux=dict(aux))
        )
        try:
            reply = self._stub.GetServerEvidence(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise translate("GetServerEvidence", exc) from exc
        return serde.server_evidence_from_proto(reply, limits=self._limits)

    def upload_status(self, *, session: Session, receipt_hash: bytes) -> UploadStatus:
        try:
            reply = self._stub.GetUploadStatus(
                serde.upload_status_request_to_proto(receipt_hash),
                metadata=self._metadata(session, _SERVICE + "GetUploadStatus"),
                timeout=CALL_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            raise translate("GetUploadStatus", exc) from exc
        return serde.upload_status_from_proto(reply, limits=self._limits)

    def close(self) -> None:
        self._channel.close()


__all__ = ["GrpcTransport", "translate"]
