"""Round trips through fedtee.wire.serde, and rejection of oversized or malformed messages."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import EvidenceFormatError, ProtocolError, Reason
from fedtee.ledger.receipts import SignedReceipt
from fedtee.wire import serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire.limits import WireLimits
from fedtee.wire.messages import (
    Challenge,
    ChallengeRequest,
    EnrollRequest,
    Enrolment,
    ModelChunk,
    ModelRequest,
    SubmitOutcome,
    Task,
    TaskKind,
    UpdateHeader,
)

EVIDENCE = Evidence(TeeType.SIM, b"\x01" * 100, {"cert": b"\x02" * 50})


def _wire(msg: object) -> object:
    """Serialise and parse again, as the peer would see it."""
    cls = type(msg)
    return cls.FromString(msg.SerializeToString())  # type: ignore[attr-defined]


def test_evidence_round_trip() -> None:
    assert serde.evidence_from_proto(_wire(serde.evidence_to_proto(EVIDENCE))) == EVIDENCE  # type: ignore[arg-type]


def test_challenge_and_request_round_trip() -> None:
    req = ChallengeRequest(client_id="c1", tee=TeeType.TPM, aux={"ek_cert": b"x"})
    ch = Challenge(nonce=b"n" * 32, expires_unix_ms=5, federation_id="f", aux={"blob": b"y"})
    assert serde.challenge_request_from_proto(_wire(serde.challenge_request_to_proto(req))) == req  # type: ignore[arg-type]
    assert serde.challenge_from_proto(_wire(serde.challenge_to_proto(ch))) == ch  # type: ignore[arg-type]


def test_enrol_round_trip() -> None:
    req = EnrollRequest(client_id="c1", nonce=b"n" * 32, public_key=b"k" * 91, evidence=EVIDENCE)
    resp = Enrolment(
        accepted=False,
        reason="debug_enabled",
        message="m",
        credential=b"c",
        credential_expires_unix_ms=9,
        attestation_result_json="{}",
    )
    assert serde.enroll_request_from_proto(_wire(serde.enroll_request_to_proto(req))) == req  # type: ignore[arg-type]
    assert serde.enrolment_from_proto(_wire(serde.enrolment_to_proto(resp))) == resp  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", list(TaskKind))
def test_task_round_trip(kind: TaskKind) -> None:
    task = Task(
        kind=kind,
        round=3,
        global_model_digest=b"d" * 32,
        global_model_size=1234,
        retry_after_ms=50,
        config={"lr": "0.1"},
        deadline_unix_ms=77,
        federation_id="f",
    )
    assert serde.task_from_proto(_wire(serde.task_to_proto(task))) == task  # type: ignore[arg-type]


def test_model_and_update_round_trip() -> None:
    mreq = ModelRequest(round=2, digest=b"d" * 32, offset=10)
    chunk = ModelChunk(data=b"abc", offset=7, total_size=10)
    header = UpdateHeader(receipt=SignedReceipt(receipt=b"r", signature=b"s"), size=99)
    outcome = SubmitOutcome(accepted=False, reason="update_digest_mismatch", message="m")
    assert serde.model_request_from_proto(_wire(serde.model_request_to_proto(mreq))) == mreq  # type: ignore[arg-type]
    assert serde.model_chunk_from_proto(_wire(serde.model_chunk_to_proto(chunk))) == chunk  # type: ignore[arg-type]
    assert serde.update_header_from_proto(_wire(serde.update_header_to_proto(header))) == header  # type: ignore[arg-type]
    assert serde.update_data_from_proto(_wire(serde.update_data_to_proto(b"xyz"))) == b"xyz"  # type: ignore[arg-type]
    assert serde.submit_outcome_from_proto(_wire(serde.submit_outcome_to_proto(outcome))) == outcome  # type: ignore[arg-type]


def test_oversized_chunk_and_evidence_rejected_before_use() -> None:
    limits = WireLimits(chunk_bytes=4096)
    with pytest.raises(ProtocolError) as exc:
        serde.update_data_from_proto(pb.UpdateChunk(data=b"x" * 4097), limits=limits)
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE
    with pytest.raises(ProtocolError) as exc:
        serde.evidence_from_proto(pb.Evidence(tee="sim", data=b"x" * (1 << 20)))
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE


def test_stream_order_and_unknown_values_rejected() -> None:
    with pytest.raises(ProtocolError) as exc:
        serde.update_header_from_proto(pb.UpdateChunk(data=b"x"))
    assert exc.value.reason is Reason.MESSAGE_MALFORMED
    with pytest.raises(ProtocolError):
        serde.update_data_from_proto(
            serde.update_header_to_proto(
                UpdateHeader(receipt=SignedReceipt(receipt=b"r", signature=b"s"), size=1)
            )
        )
    with pytest.raises(EvidenceFormatError) as eexc:
        serde.evidence_from_proto(pb.Evidence(tee="nope", data=b"x"))
    assert eexc.value.reason is Reason.EVIDENCE_TYPE_UNKNOWN
    with pytest.raises(ProtocolError):
        serde.task_from_proto(pb.Task(kind=0))
    with pytest.raises(ProtocolError):
        serde.enroll_request_from_proto(
            pb.EnrollRequest(client_id="c", nonce=b"n", public_key=b"k")
        )
    with pytest.raises(ProtocolError):
        serde.model_chunk_from_proto(pb.ModelChunk(data=b"abc", offset=9, total_size=10))


@given(st.binary(max_size=512))
def test_random_bytes_raise_only_typed_errors(data: bytes) -> None:
    try:
        msg = pb.EnrollRequest.FromString(data)
    except Exception:  # protobuf's own DecodeError: the service maps it before serde
        return
    with contextlib.suppress(ProtocolError, EvidenceFormatError):
        serde.enroll_request_from_proto(msg)
