"""The gRPC servicer for fedtee.v1.Federation: authentication, bounds and error mapping.

Every call's input goes through :mod:`fedtee.wire.serde` (bounded, typed) before the gate or
the round manager sees it; nothing a peer sends is ever unpickled or executed. Every failure
leaves with a gRPC status AND its stable reason: in the trailing metadata ``fedtee-reason``
and, where the response has the fields (EnrollResponse, SubmitResult), in the message.

Authentication of GetTask / DownloadModel / SubmitUpdate: the credential in
``fedtee-credential-bin`` must verify (server signature, federation, expiry), name an enrolled,
unquarantined client, be bound to that client's current key, and come with a proof of
possession of that key for this method (:mod:`fedtee.wire.auth`). An expired credential on
GetTask is answered with a REATTEST task; elsewhere with UNAUTHENTICATED /
``credential_expired``.

GetServerEvidence (mutual attestation) is unauthenticated, since clients check the server
before they enrol: :class:`~fedtee.server.self_attestation.ServerAttestation` bounds it (rate
limit, one device call at a time). A server without an attester answers UNIMPLEMENTED /
``device_absent``.

Requests are registered by :func:`add_to_server`, whose deserializers turn bytes that are not
the method's protobuf message into a MESSAGE_MALFORMED refusal instead of gRPC's generic
INTERNAL. Refusals of what could change a model (an Enroll or SubmitUpdate that is malformed
or oversized, a SubmitUpdate with a bad credential, a stream that stalls before its header)
are recorded in the store and the ledger like the gate's and the round manager's; refusals of
read-only calls (GetChallenge, GetTask, DownloadModel) are not, so polling cannot grow the
ledger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError

from fedtee.codec import parse_encoding
from fedtee.errors import (
    AttestationError,
    CredentialError,
    EvidenceFormatError,
    FedteeError,
    ProtocolError,
    Reason,
    StorageError,
    UpdateRejected,
)
from fedtee.server.credentials import CredentialAuthority
from fedtee.server.gate import EnrolmentGate
from fedtee.server.rounds import RoundManager
from fedtee.server.self_attestation import ServerAttestation
from fedtee.server.slots import SLOT_FREE_BYTES, Lease, ServerBusyError, TransferSlots
from fedtee.server.store import ClientRecord, StateStore
from fedtee.wire import auth, serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc
from fedtee.wire.limits import DEFAULT_LIMITS, WireLimits
from fedtee.wire.messages import ModelChunk, SubmitOutcome, Task, TaskKind, UploadStatus

log = logging.getLogger(__name__)

SERVICE = "/fedtee.v1.Federation/"
GET_TASK = SERVICE + "GetTask"
DOWNLOAD_MODEL = SERVICE + "DownloadModel"
SUBMIT_UPDATE = SERVICE + "SubmitUpdate"
GET_UPLOAD_STATUS = SERVICE + "GetUploadStatus"
UPLOAD_GRACE_MS = 5_000

_STATUS_BY_REASON: dict[Reason, grpc.StatusCode] = {
    Reason.MESSAGE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.ROUND_CLOSED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.NOT_SELECTED: grpc.StatusCode.FAILED_PRECONDITION,
    Reason.CLIENT_QUARANTINED: grpc.StatusCode.PERMISSION_DENIED,
    Reason.STREAM_STALLED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Reason.MODEL_DIGEST_MISMATCH: grpc.StatusCode.NOT_FOUND,
    Reason.DEVICE_ABSENT: grpc.StatusCode.UNIMPLEMENTED,
    Reason.DEVICE_BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.SERVER_BUSY: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Reason.DEVICE_FAILED: grpc.StatusCode.INTERNAL,
}


def status_for(exc: FedteeError) -> grpc.StatusCode:
    if exc.reason in _STATUS_BY_REASON:
        return _STATUS_BY_REASON[exc.reason]
    if isinstance(exc, CredentialError):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(exc, EvidenceFormatError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, AttestationError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, StorageError):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(exc, ProtocolError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: FedteeError) -> NoReturn:
    trailing: tuple[tuple[str, str], ...] = ((auth.REASON_KEY, exc.reason.value),)
    if isinstance(exc, ServerBusyError):
        trailing += ((auth.RETRY_AFTER_KEY, str(exc.retry_after_ms)),)
    context.set_trailing_metadata(trailing)
    context.abort(status_for(exc), str(exc))
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _internal(context: grpc.ServicerContext, where: str, exc: Exception) -> NoReturn:
    log.exception("internal error in %s", where)
    _abort(context, FedteeError(f"internal error in {where}: {type(exc).__name__}"))


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


class _Malformed:
    """A request whose bytes are not its method's protobuf message (see add_to_server)."""

    __slots__ = ("error", "size")

    def __init__(self, size: int, error: str) -> None:
        self.size = size
        self.error = error[:200]

    def refusal(self, method: str) -> ProtocolError:
        return ProtocolError(
            f"{method}: {self.size} bytes are not a valid request message ({self.error})",
            reason=Reason.MESSAGE_MALFORMED,
        )


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except (DecodeError, RecursionError) as exc:
            return _Malformed(len(data), str(exc) or type(exc).__name__)

    return deserialize


class FederationService(pb_grpc.FederationServicer):
    def __init__(
        self,
        *,
        gate: EnrolmentGate,
        rounds: RoundManager,
        authority: CredentialAuthority,
        store: StateStore,
        clock: Callable[[], datetime],
        limits: WireLimits = DEFAULT_LIMITS,
        upload_grace_ms: int = UPLOAD_GRACE_MS,
        server_attestation: ServerAttestation | None = None,
        slots: TransferSlots | None = None,
        transfer_wait_s: float = 0.0,
    ) -> None:
        self._slots = slots if slots is not None else TransferSlots(0)
        self._transfer_wait_s = transfer_wait_s
        self._upload_grace_ms = upload_grace_ms
        self._server_attestation = server_attestation
        self._gate = gate
        self._rounds = rounds
        self._authority = authority
        self._store = store
        self._clock = clock
        self._limits = limits

    def _lease(self, client_id: str, size: int, *, wait_s: float) -> Lease:
        """A transfer slot for ``size`` bytes still to move, or no slot (a lease that holds
        none) for a transfer of at most SLOT_FREE_BYTES: what one holds in flight is about
        its size, and the worker threads already bound how many run at once."""
        if size <= SLOT_FREE_BYTES:
            return Lease.free()
        return self._slots.acquire(client_id, wait_s=wait_s)

    def _record(self, exc: FedteeError, *, client_id: str | None) -> None:
        try:
            self._gate.record_rejection(client_id, exc, now_ms=_ms(self._clock()))
        except FedteeError:
            log.exception("could not record a refusal (%s)", exc.reason.value)

    def refuse_malformed(self, context: grpc.ServicerContext, method: str, bad: Any) -> NoReturn:
        """Answer (and, for Enroll / SubmitUpdate, record) a request that did not parse."""
        exc = bad.refusal(method)
        if method in ("Enroll", "SubmitUpdate"):
            self._record(exc, client_id=None)
        _abort(context, exc)

    # --- authentication --------------------------------------------------------------------

    def _authenticate(self, context: grpc.ServicerContext, method: str) -> ClientRecord:
        now_ms = _ms(self._clock())
        presented = auth.read_metadata(context.invocation_metadata())
        cred = self._authority.verify(presented.credential, now_ms=now_ms)
        client = self._store.get_client(cred.client_id)
        if client is None or not client.active:
            raise CredentialError(f"credential names unknown client {cred.client_id!r}")
        if client.quarantined:
            raise CredentialError(
                f"client {client.id!r} is quarantined ({client.quarantine_reason})",
                reason=Reason.CLIENT_QUARANTINED,
            )
        self._authority.verify(
            presented.credential, now_ms=now_ms, client_id=client.id, public_key=client.public_key
        )
        auth.verify_pop(presented, method=method, public_key=client.public_key, now_ms=now_ms)
        return client

    # --- enrolment -------------------------------------------------------------------------

    def GetChallenge(
        self, request: pb.ChallengeRequest, context: grpc.ServicerContext
    ) -> pb.Challenge:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "GetChallenge", request)
        try:
            req = serde.challenge_request_from_proto(request, limits=self._limits)
            return serde.challenge_to_proto(self._gate.challenge(req))
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "GetChallenge", exc)

    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "Enroll", request)
        try:
            req = serde.enroll_request_from_proto(request, limits=self._limits)
        except FedteeError as exc:
            self._record(exc, client_id=None)
            context.set_trailing_metadata(((auth.REASON_KEY, exc.reason.value),))
            return pb.EnrollResponse(accepted=False, reason=exc.reason.value, message=exc.message)
        try:
            outcome = self._gate.enroll(req)
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "Enroll", exc)
        if not outcome.accepted:
            context.set_trailing_metadata(((auth.REASON_KEY, outcome.reason),))
        return serde.enrolment_to_proto(outcome)

    # --- tasks and models ------------------------------------------------------------------

    def GetTask(self, request: pb.TaskRequest, context: grpc.ServicerContext) -> pb.Task:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "GetTask", request)
        try:
            try:
                client = self._authenticate(context, GET_TASK)
            except CredentialError as exc:
                if exc.reason is not Reason.CREDENTIAL_EXPIRED:
                    raise
                context.set_trailing_metadata(((auth.REASON_KEY, exc.reason.value),))
                return serde.task_to_proto(
                    Task(kind=TaskKind.REATTEST, federation_id=self._rounds.federation_id)
                )
            if request.client_id and request.client_id != client.id:
                raise CredentialError(
                    f"task asked for {request.client_id[:64]!r} with {client.id!r}'s credential",
                    reason=Reason.CREDENTIAL_WRONG_CLIENT,
                )
            return serde.task_to_proto(self._rounds.task_for(client))
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "GetTask", exc)

    def DownloadModel(
        self, request: pb.ModelRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "DownloadModel", request)
        try:
            client = self._authenticate(context, DOWNLOAD_MODEL)
            req = serde.model_request_from_proto(request)
            chunks = self._rounds.model_chunks(
                round=req.round, digest=req.digest, offset=req.offset
            )
            total = self._rounds.model_size(req.digest)
            # Last: a refused request costs nothing.
            lease = self._lease(client.id, total - req.offset, wait_s=self._transfer_wait_s)
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "DownloadModel", exc)
        # Also on a cancelled call, whose generator may never be resumed to its finally.
        context.add_callback(lease.release)
        lease.watch(context.cancel)  # a client that stops reading loses its slot
        try:
            offset = req.offset
            for data in chunks:
                yield serde.model_chunk_to_wire(
                    ModelChunk(data=data, offset=offset, total_size=total)
                )
                lease.touch()  # resumed: gRPC took the chunk before
                offset += len(data)
        except FedteeError as exc:  # e.g. STORAGE_CORRUPT: the file failed its digest
            _abort(context, exc)
        finally:
            lease.release()

    # --- updates ---------------------------------------------------------------------------

    def SubmitUpdate(
        self, request_iterator: Iterator[pb.UpdateChunk], context: grpc.ServicerContext
    ) -> pb.SubmitResult:
        timer: threading.Timer | None = None
        client: ClientRecord | None = None
        lease: Lease | None = None
        try:
            # A client that stops sending (even before its header) must not hold a server
            # thread past the round's deadline plus the grace period.
            remaining_ms = max(self._rounds.deadline_ms - _ms(self._clock()), 0)
            cut = threading.Event()

            def cut_off() -> None:
                cut.set()
                context.cancel()

            timer = threading.Timer((remaining_ms + self._upload_grace_ms) / 1000, cut_off)
            timer.daemon = True
            timer.start()
            client = self._authenticate(context, SUBMIT_UPDATE)
            try:
                first = next(request_iterator)
            except StopIteration:
                if cut.is_set():  # a cancelled stream may end rather than raise
                    raise UpdateRejected(
                        "update stream sent no header before its deadline",
                        reason=Reason.STREAM_STALLED,
                    ) from None
                raise ProtocolError("update stream is empty") from None
            except grpc.RpcError as exc:
                raise UpdateRejected(
                    "update stream broke off before its header", reason=Reason.STREAM_STALLED
                ) from exc
            if isinstance(first, _Malformed):
                raise first.refusal("SubmitUpdate")
            header = serde.update_header_from_proto(first, limits=self._limits)
            # Until the go below the client sends nothing but that header, so a transfer
            # waiting for its slot, or refused, holds none of its data here.
            lease = self._lease(
                client.id,
                header.size - header.offset,
                wait_s=min(self._transfer_wait_s, remaining_ms / 1000),
            )
            lease.watch(cut_off)  # a client that stops sending loses its slot
            context.send_initial_metadata(((auth.UPLOAD_GO_KEY, auth.UPLOAD_GO),))
            result = self._rounds.submit(
                client,
                signed=header.receipt,
                size=header.size,
                chunks=self._data(request_iterator, touch=lease.touch),
                encoding=parse_encoding(header.encoding),
                offset=header.offset,
            )
        except ServerBusyError as exc:
            _abort(context, exc)  # load shedding: not a refusal, not recorded
        except FedteeError as exc:
            # rounds.submit records its own refusals and returns them: these came before it.
            self._record(exc, client_id=None if client is None else client.id)
            if isinstance(exc, CredentialError) or exc.reason is Reason.MESSAGE_TOO_LARGE:
                _abort(context, exc)
            context.set_trailing_metadata(((auth.REASON_KEY, exc.reason.value),))
            return serde.submit_outcome_to_proto(
                SubmitOutcome(accepted=False, reason=exc.reason.value, message=exc.message)
            )
        except Exception as exc:
            _internal(context, "SubmitUpdate", exc)
        finally:
            if timer is not None:
                timer.cancel()
            if lease is not None:
                lease.release()
        reason = "" if result.reason is None else result.reason.value
        if reason:
            context.set_trailing_metadata(((auth.REASON_KEY, reason),))
        return serde.submit_outcome_to_proto(
            SubmitOutcome(accepted=result.accepted, reason=reason, message=result.message)
        )

    def GetUploadStatus(
        self, request: pb.UploadStatusRequest, context: grpc.ServicerContext
    ) -> pb.UploadStatus:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "GetUploadStatus", request)
        try:
            client = self._authenticate(context, GET_UPLOAD_STATUS)
            key = serde.upload_status_request_from_proto(request)
            committed, size = self._rounds.upload_status(client, key)
            return serde.upload_status_to_proto(UploadStatus(committed=committed, size=size))
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "GetUploadStatus", exc)

    def _data(
        self, request_iterator: Iterator[pb.UpdateChunk], *, touch: Callable[[], None]
    ) -> Iterator[bytes | memoryview]:
        while True:
            try:
                msg = next(request_iterator)
                touch()
                if isinstance(msg, _Malformed):
                    raise msg.refusal("SubmitUpdate")
            except StopIteration:
                return
            except FedteeError:
                raise
            except Exception as exc:  # the client went away or was cut off at the deadline
                raise UpdateRejected(
                    f"update stream broke off: {type(exc).__name__}",
                    reason=Reason.STREAM_STALLED,
                ) from exc
            yield serde.update_data_from_proto(msg, limits=self._limits)

    def GetServerEvidence(
        self, request: pb.ServerEvidenceRequest, context: grpc.ServicerContext
    ) -> pb.ServerEvidence:
        if isinstance(request, _Malformed):
            self.refuse_malformed(context, "GetServerEvidence", request)
        try:
            if self._server_attestation is None:
                raise FedteeError(
                    "this aggregator runs outside a TEE and has no evidence to show",
                    reason=Reason.DEVICE_ABSENT,
                )
            req = serde.server_evidence_request_from_proto(request, limits=self._limits)
            return serde.server_evidence_to_proto(self._server_attestation.evidence(req))
        except FedteeError as exc:
            _abort(context, exc)
        except Exception as exc:
            _internal(context, "GetServerEvidence", exc)


def add_to_server(service: FederationService, server: grpc.Server) -> None:
    """Register ``service`` on ``server`` like the generated
    ``add_FederationServicer_to_server``, but with deserializers that hand undecodable bytes
    to the handler as a :class:`_Malformed` (answered MESSAGE_MALFORMED) instead of failing
    the call with gRPC's generic INTERNAL."""
    # Every RPC of the service, taken from the proto's descriptor so that none can be
    # forgotten here; a method the service class lacks fails at start, not per call.
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["Federation"].methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        make = kinds[(method.client_streaming, method.server_streaming)]
        # The messages that carry model bytes are read and written in wire format (an
        # upload's data as a view of the received message; a download's chunk joined once).
        parse = serde.update_chunk_from_wire if request is pb.UpdateChunk else request.FromString
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=_tolerant(parse),
            response_serializer=serde.to_wire
            if response is pb.ModelChunk
            else response.SerializeToString,
        )
    generic = grpc.method_handlers_generic_handler("fedtee.v1.Federation", handlers)
    server.add_generic_rpc_handlers((generic,))


def reason_of(error: Any) -> str:
    """The ``fedtee-reason`` trailing metadata of a failed call (client side helper)."""
    try:
        for key, value in error.trailing_metadata() or ():
            if key == auth.REASON_KEY:
                return str(value)
    except Exception:  # not a grpc.Call
        return ""
    return ""


__all__ = ["FederationService", "add_to_server", "reason_of", "status_for"]
