"""The one place protobuf meets domain types: paired ``x_to_proto`` / ``x_from_proto``.

``*_from_proto`` functions read what a peer sent, so they check every size against
:mod:`fedtee.wire.limits` and raise :class:`~fedtee.errors.ProtocolError`
(MESSAGE_MALFORMED / MESSAGE_TOO_LARGE) or the evidence's own
:class:`~fedtee.errors.EvidenceFormatError`; never anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedtee.attest.model import Evidence, TeeType
from fedtee.codec import parse_encoding
from fedtee.errors import ProtocolError, Reason
from fedtee.ledger.receipts import MAX_RECEIPT_BYTES, SignedReceipt
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire.limits import DEFAULT_LIMITS, WireLimits, check_size
from fedtee.wire.messages import (
    Challenge,
    ChallengeRequest,
    EnrollRequest,
    Enrolment,
    ModelChunk,
    ModelRequest,
    ServerEvidence,
    ServerEvidenceRequest,
    SubmitOutcome,
    Task,
    TaskKind,
    UpdateHeader,
    UploadStatus,
)

MAX_AUX_KEY_LEN = 64
MAX_REASON_LEN = 64
MAX_TEXT_LEN = 4096
MAX_SIGNATURE_BYTES = 80
DIGEST_BYTES = 32


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(message, reason=Reason.MESSAGE_MALFORMED)


def _check_id(what: str, value: str, limits: WireLimits) -> str:
    if not 0 < len(value) <= limits.max_id_len:
        raise _malformed(f"{what} must be 1..{limits.max_id_len} characters")
    return value


def _aux_from(aux: Mapping[str, bytes], *, limit: int, what: str) -> dict[str, bytes]:
    total = 0
    out: dict[str, bytes] = {}
    for key, value in aux.items():
        if not 0 < len(key) <= MAX_AUX_KEY_LEN:
            raise _malformed(f"{what} key {key[:MAX_AUX_KEY_LEN]!r} has a bad length")
        total += len(value)
        out[key] = bytes(value)
    check_size(what, total, limit)
    return out


# --- evidence --------------------------------------------------------------------------------


def evidence_to_proto(evidence: Evidence) -> pb.Evidence:
    return pb.Evidence(tee=evidence.tee.value, data=evidence.data, aux=dict(evidence.aux))


def evidence_from_proto(msg: pb.Evidence, *, limits: WireLimits = DEFAULT_LIMITS) -> Evidence:
    check_size("evidence", len(msg.data), limits.max_evidence_bytes)
    aux = _aux_from(msg.aux, limit=limits.max_evidence_bytes, what="evidence aux")
    # Evidence checks its own bounds (EvidenceFormatError) and the type name.
    return Evidence(TeeType.parse(msg.tee), bytes(msg.data), aux)


# --- challenge -------------------------------------------------------------------------------


def challenge_request_to_proto(req: ChallengeRequest) -> pb.ChallengeRequest:
    return pb.ChallengeRequest(client_id=req.client_id, tee=req.tee.value, aux=dict(req.aux))


def challenge_request_from_proto(
    msg: pb.ChallengeRequest, *, limits: WireLimits = DEFAULT_LIMITS
) -> ChallengeRequest:
    return ChallengeRequest(
        client_id=_check_id("client_id", msg.client_id, limits),
        tee=TeeType.parse(msg.tee),
        aux=_aux_from(msg.aux, limit=limits.max_challenge_aux_bytes, what="challenge aux"),
    )


def challenge_to_proto(ch: Challenge) -> pb.Challenge:
    return pb.Challenge(
        nonce=ch.nonce,
        expires_unix_ms=ch.expires_unix_ms,
        federation_id=ch.federation_id,
        aux=dict(ch.aux),
    )


def challenge_from_proto(msg: pb.Challenge, *, limits: WireLimits = DEFAULT_LIMITS) -> Challenge:
    if not 16 <= len(msg.nonce) <= 64:
        raise _malformed(f"nonce of {len(msg.nonce)} bytes (want 16..64)")
    return Challenge(
        nonce=bytes(msg.nonce),
        expires_unix_ms=msg.expires_unix_ms,
        federation_id=_check_id("federation_id", msg.federation_id, limits),
        aux=_aux_from(msg.aux, limit=limits.max_challenge_aux_bytes, what="challenge aux"),
    )


# --- enrolment -------------------------------------------------------------------------------


def enroll_request_to_proto(req: EnrollRequest) -> pb.EnrollRequest:
    return pb.EnrollRequest(
        client_id=req.client_id,
        nonce=req.nonce,
        public_key=req.public_key,
        evidence=evidence_to_proto(req.evidence),
    )


def enroll_request_from_proto(
    msg: pb.EnrollRequest, *, limits: WireLimits = DEFAULT_LIMITS
) -> EnrollRequest:
    if not msg.HasField("evidence"):
        raise _malformed("enrol request carries no evidence")
    if not 0 < len(msg.nonce) <= 64:
        raise _malformed(f"nonce of {len(msg.nonce)} bytes")
    if not 0 < len(msg.public_key) <= 4096:
        raise _malformed(f"public key of {len(msg.public_key)} bytes")
    return EnrollRequest(
        client_id=_check_id("client_id", msg.client_id, limits),
        nonce=bytes(msg.nonce),
        public_key=bytes(msg.public_key),
        evidence=evidence_from_proto(msg.evidence, limits=limits),
    )


def enrolment_to_proto(e: Enrolment) -> pb.EnrollResponse:
    return pb.EnrollResponse(
        accepted=e.accepted,
        reason=e.reason,
        message=e.message,
        credential=e.credential,
        credential_expires_unix_ms=e.credential_expires_unix_ms,
        attestation_result_json=e.attestation_result_json,
    )


def enrolment_from_proto(msg: pb.EnrollResponse) -> Enrolment:
    if len(msg.credential) > 4096 or len(msg.attestation_result_json) > 1 << 20:
        raise ProtocolError("enrol response too large", reason=Reason.MESSAGE_TOO_LARGE)
    return Enrolment(
        accepted=msg.accepted,
        reason=msg.reason[:MAX_REASON_LEN],
        message=msg.message[:MAX_TEXT_LEN],
        credential=bytes(msg.credential),
        credential_expires_unix_ms=msg.credential_expires_unix_ms,
        attestation_result_json=msg.attestation_result_json,
    )


# --- tasks -----------------------------------------------------------------------------------

_KIND_TO_PROTO = {
    TaskKind.TRAIN: pb.Task.TRAIN,
    TaskKind.WAIT: pb.Task.WAIT,
    TaskKind.FINISHED: pb.Task.FINISHED,
    TaskKind.REATTEST: pb.Task.REATTEST,
}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}


def task_to_proto(task: Task) -> pb.Task:
    return pb.Task(
        kind=_KIND_TO_PROTO[task.kind],
        round=task.round,
        global_model_digest=task.global_model_digest,
        global_model_size=task.global_model_size,
        retry_after_ms=task.retry_after_ms,
        config=dict(task.config),
        deadline_unix_ms=task.deadline_unix_ms,
        federation_id=task.federation_id,
    )


def task_from_proto(msg: pb.Task, *, limits: WireLimits = DEFAULT_LIMITS) -> Task:
    kind = _KIND_FROM_PROTO.get(msg.kind)
    if kind is None:
        raise _malformed(f"unknown task kind {msg.kind}")
    if msg.global_model_digest and len(msg.global_model_digest) != DIGEST_BYTES:
        raise _malformed("global model digest is not 32 bytes")
    check_size("global model", msg.global_model_size, limits.max_model_bytes)
    if len(msg.config) > limits.max_config_entries:
        raise ProtocolError("too many config entries", reason=Reason.MESSAGE_TOO_LARGE)
    return Task(
        kind=kind,
        round=msg.round,
        global_model_digest=bytes(msg.global_model_digest),
        global_model_size=msg.global_model_size,
        retry_after_ms=msg.retry_after_ms,
        config=dict(msg.config),
        deadline_unix_ms=msg.deadline_unix_ms,
        federation_id=msg.federation_id,
    )


# --- models ----------------------------------------------------------------------------------


def task_request_to_proto(*, client_id: str) -> pb.TaskRequest:
    return pb.TaskRequest(client_id=client_id)


def model_request_to_proto(req: ModelRequest) -> pb.ModelRequest:
    return pb.ModelRequest(round=req.round, digest=req.digest, offset=req.offset)


def model_request_from_proto(msg: pb.ModelRequest) -> ModelRequest:
    if len(msg.digest) != DIGEST_BYTES:
        raise _malformed("model digest is not 32 bytes")
    return ModelRequest(round=msg.round, digest=bytes(msg.digest), offset=msg.offset)


# --- the messages that carry model bytes -----------------------------------------------------
#
# Every byte of a model crosses the wire in a ModelChunk (downloads) or in an UpdateChunk's
# data (uploads). protobuf's Python runtime (upb) copies a bytes field when it builds a
# message, again when it serialises it, when it parses one and on every access of the field.
# These two messages are therefore written and read here from the protobuf wire format
# itself: a tag byte (field number << 3 | wire type), base-128 varints for integers and
# lengths, fields in field-number order and default values left out, as protobuf writes
# them (``model_chunk_to_wire`` is byte-identical to ``SerializeToString``). Writing joins a
# field's tag and length to its data (one copy); reading hands out the data as a memoryview
# of the received message (none). A message in any other shape (fields reordered or
# repeated, unknown fields, an UpdateChunk's header) is parsed by protobuf, so what a peer
# sends means exactly what protobuf would make of it.

_MODEL_DATA, _MODEL_OFFSET, _MODEL_TOTAL = 0x0A, 0x10, 0x18  # ModelChunk fields 1, 2, 3
_UPDATE_DATA = 0x12  # UpdateChunk field 2 (data), length-delimited
_MAX_VARINT_BYTES = 10


class ModelChunkView:
    """A ModelChunk read without copying its data (:func:`model_chunk_from_wire`)."""

    __slots__ = ("data", "offset", "total_size")

    def __init__(self, data: memoryview, offset: int, total_size: int) -> None:
        self.data = data
        self.offset = offset
        self.total_size = total_size


class UpdateDataView:
    """An UpdateChunk that carries only data, read without copying it."""

    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(raw: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None for a varint protobuf should judge (unterminated,
    over 10 bytes, or past 64 bits)."""
    value = shift = 0
    for i in range(pos, min(len(raw), pos + _MAX_VARINT_BYTES)):
        byte = raw[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value, i + 1) if value < 1 << 64 else None
        shift += 7
    return None


def to_wire(msg: Any) -> bytes:
    """A gRPC serializer: bytes already in wire format as they are, a message serialised."""
    if isinstance(msg, bytes):
        return msg
    out: bytes = msg.SerializeToString()
    return out


def model_chunk_to_wire(chunk: ModelChunk) -> bytes:
    """``model_chunk_to_proto(chunk).SerializeToString()``, with one copy of the data."""
    parts: list[bytes | memoryview] = []
    if len(chunk.data):
        parts += (bytes((_MODEL_DATA,)) + _varint(len(chunk.data)), chunk.data)
    if chunk.offset:
        parts.append(bytes((_MODEL_OFFSET,)) + _varint(chunk.offset))
    if chunk.total_size:
        parts.append(bytes((_MODEL_TOTAL,)) + _varint(chunk.total_size))
    return b"".join(parts)


def model_chunk_from_wire(raw: bytes) -> pb.ModelChunk | ModelChunkView:
    """A gRPC deserializer: the ModelChunk in ``raw`` (protobuf's DecodeError if it is none),
    its data a view of ``raw`` when the message has the shape protobuf writes."""
    view = memoryview(raw)
    pos, data, numbers = 0, view[:0], [0, 0]
    if pos < len(raw) and raw[pos] == _MODEL_DATA:
        length = _read_varint(raw, pos + 1)
        if length is None or length[1] + length[0] > len(raw):
            return pb.ModelChunk.FromString(raw)
        data, pos = view[length[1] : length[1] + length[0]], length[1] + length[0]
    for k, tag in enumerate((_MODEL_OFFSET, _MODEL_TOTAL)):
        if pos < len(raw) and raw[pos] == tag:
            number = _read_varint(raw, pos + 1)
            if number is None:
                return pb.ModelChunk.FromString(raw)
            numbers[k], pos = number
    if pos != len(raw):
        return pb.ModelChunk.FromString(raw)
    return ModelChunkView(data, numbers[0], numbers[1])


def model_chunk_to_proto(chunk: ModelChunk) -> pb.ModelChunk:
    return pb.ModelChunk(data=bytes(chunk.data), offset=chunk.offset, total_size=chunk.total_size)


def model_chunk_from_proto(
    msg: pb.ModelChunk | ModelChunkView, *, limits: WireLimits = DEFAULT_LIMITS
) -> ModelChunk:
    data = msg.data  # upb copies a bytes field on every access: read it once
    check_size("model chunk", len(data), limits.chunk_bytes)
    check_size("model", msg.total_size, limits.max_model_bytes)
    if msg.offset + len(data) > msg.total_size:
        raise _malformed("model chunk runs past the model's declared size")
    return ModelChunk(data=data, offset=msg.offset, total_size=msg.total_size)


# --- updates ---------------------------------------------------------------------------------


def signed_receipt_to_proto(signed: SignedReceipt) -> pb.SignedReceipt:
    return pb.SignedReceipt(receipt=signed.receipt, signature=signed.signature)


def signed_receipt_from_proto(msg: pb.SignedReceipt) -> SignedReceipt:
    check_size("receipt", len(msg.receipt), MAX_RECEIPT_BYTES)
    check_size("receipt signature", len(msg.signature), MAX_SIGNATURE_BYTES)
    return SignedReceipt(receipt=bytes(msg.receipt), signature=bytes(msg.signature))


def update_header_to_proto(header: UpdateHeader) -> pb.UpdateChunk:
    return pb.UpdateChunk(
        header=pb.UpdateHeader(
            receipt=signed_receipt_to_proto(header.receipt),
            size=header.size,
            encoding=header.encoding,
            offset=header.offset,
        )
    )


def update_header_from_proto(
    msg: pb.UpdateChunk | UpdateDataView, *, limits: WireLimits = DEFAULT_LIMITS
) -> UpdateHeader:
    if isinstance(msg, UpdateDataView) or msg.WhichOneof("part") != "header":
        raise _malformed("an update stream must start with its header")
    header = msg.header
    if not header.HasField("receipt"):
        raise _malformed("update header carries no receipt")
    check_size("update", header.size, limits.max_model_bytes)
    if header.offset >= max(header.size, 1):
        raise _malformed(f"resume offset {header.offset} is not below the size {header.size}")
    return UpdateHeader(
        receipt=signed_receipt_from_proto(header.receipt),
        size=header.size,
        encoding=parse_encoding(header.encoding).value,  # UPDATE_MALFORMED if unknown
        offset=header.offset,
    )


def update_data_to_proto(data: bytes) -> pb.UpdateChunk:
    return pb.UpdateChunk(data=data)


def update_data_to_wire(data: bytes | memoryview) -> bytes:
    """``update_data_to_proto(data).SerializeToString()``, with one copy of ``data``."""
    return b"".join((bytes((_UPDATE_DATA,)) + _varint(len(data)), data))


def update_chunk_from_wire(raw: bytes) -> pb.UpdateChunk | UpdateDataView:
    """A gRPC deserializer: the UpdateChunk in ``raw`` (protobuf's DecodeError if it is
    none); one that is all data (the field, once) as a view of ``raw``."""
    if raw[:1] == bytes((_UPDATE_DATA,)):
        length = _read_varint(raw, 1)
        if length is not None and length[1] + length[0] == len(raw):
            return UpdateDataView(memoryview(raw)[length[1] :])
    return pb.UpdateChunk.FromString(raw)


def update_data_from_proto(
    msg: pb.UpdateChunk | UpdateDataView, *, limits: WireLimits = DEFAULT_LIMITS
) -> bytes | memoryview:
    if isinstance(msg, UpdateDataView):
        check_size("update chunk", len(msg.data), limits.chunk_bytes)
        return msg.data
    if msg.WhichOneof("part") != "data":
        raise _malformed("only data may follow the update header")
    data = msg.data  # upb copies a bytes field on every access: read it once
    check_size("update chunk", len(data), limits.chunk_bytes)
    return data


def upload_status_request_to_proto(receipt_hash: bytes) -> pb.UploadStatusRequest:
    return pb.UploadStatusRequest(receipt_hash=receipt_hash)


def upload_status_request_from_proto(msg: pb.UploadStatusRequest) -> bytes:
    """The receipt hash naming the upload."""
    if len(msg.receipt_hash) != DIGEST_BYTES:
        raise _malformed("upload receipt hash is not 32 bytes")
    return bytes(msg.receipt_hash)


def upload_status_to_proto(status: UploadStatus) -> pb.UploadStatus:
    return pb.UploadStatus(committed=status.committed, size=status.size)


def upload_status_from_proto(
    msg: pb.UploadStatus, *, limits: WireLimits = DEFAULT_LIMITS
) -> UploadStatus:
    check_size("update", msg.size, limits.max_model_bytes)
    if msg.committed > msg.size:
        raise _malformed(f"server holds {msg.committed} of an upload of {msg.size} bytes")
    return UploadStatus(committed=msg.committed, size=msg.size)


def submit_outcome_to_proto(outcome: SubmitOutcome) -> pb.SubmitResult:
    return pb.SubmitResult(
        accepted=outcome.accepted, reason=outcome.reason, message=outcome.message
    )


def submit_outcome_from_proto(msg: pb.SubmitResult) -> SubmitOutcome:
    return SubmitOutcome(
        accepted=msg.accepted,
        reason=msg.reason[:MAX_REASON_LEN],
        message=msg.message[:MAX_TEXT_LEN],
    )


# --- mutual attestation ----------------------------------------------------------------------

MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
MAX_PUBLIC_KEY_BYTES = 4096


def server_evidence_request_to_proto(req: ServerEvidenceRequest) -> pb.ServerEvidenceRequest:
    return pb.ServerEvidenceRequest(nonce=req.nonce, aux=dict(req.aux))


def server_evidence_request_from_proto(
    msg: pb.ServerEvidenceRequest, *, limits: WireLimits = DEFAULT_LIMITS
) -> ServerEvidenceRequest:
    if not MIN_NONCE_BYTES <= len(msg.nonce) <= MAX_NONCE_BYTES:
        raise _malformed(
            f"nonce of {len(msg.nonce)} bytes (want {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES})"
        )
    return ServerEvidenceRequest(
        nonce=bytes(msg.nonce),
        aux=_aux_from(msg.aux, limit=limits.max_challenge_aux_bytes, what="server evidence aux"),
    )


def server_evidence_to_proto(reply: ServerEvidence) -> pb.ServerEvidence:
    return pb.ServerEvidence(
        evidence=evidence_to_proto(reply.evidence),
        public_key=reply.public_key,
        challenge_request=dict(reply.challenge_request),
    )


def server_evidence_from_proto(
    msg: pb.ServerEvidence, *, limits: WireLimits = DEFAULT_LIMITS
) -> ServerEvidence:
    if not msg.HasField("evidence"):
        raise _malformed("server evidence reply carries no evidence")
    if not 0 < len(msg.public_key) <= MAX_PUBLIC_KEY_BYTES:
        raise _malformed(f"server public key of {len(msg.public_key)} bytes")
    return ServerEvidence(
        evidence=evidence_from_proto(msg.evidence, limits=limits),
        public_key=bytes(msg.public_key),
        challenge_request=_aux_from(
            msg.challenge_request,
            limit=limits.max_challenge_aux_bytes,
            what="server challenge request",
        ),
    )


__all__ = [
    "challenge_from_proto",
    "challenge_request_from_proto",
    "challenge_request_to_proto",
    "challenge_to_proto",
    "enroll_request_from_proto",
    "enroll_request_to_proto",
    "enrolment_from_proto",
    "enrolment_to_proto",
    "evidence_from_proto",
    "evidence_to_proto",
    "ModelChunkView",
    "UpdateDataView",
    "model_chunk_from_proto",
    "model_chunk_from_wire",
    "model_chunk_to_proto",
    "model_chunk_to_wire",
    "model_request_from_proto",
    "model_request_to_proto",
    "server_evidence_from_proto",
    "server_evidence_request_from_proto",
    "server_evidence_request_to_proto",
    "server_evidence_to_proto",
    "signed_receipt_from_proto",
    "signed_receipt_to_proto",
    "submit_outcome_from_proto",
    "submit_outcome_to_proto",
    "task_from_proto",
    "task_request_to_proto",
    "task_to_proto",
    "to_wire",
    "update_chunk_from_wire",
    "update_data_from_proto",
    "update_data_to_proto",
    "update_data_to_wire",
    "update_header_from_proto",
    "update_header_to_proto",
    "upload_status_from_proto",
    "upload_status_request_from_proto",
    "upload_status_request_to_proto",
    "upload_status_to_proto",
]
