"""Mutual attestation messages through fedtee.wire.serde: round trips and bounds."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedtee.attest.model import Evidence, TeeType
from fedtee.errors import EvidenceFormatError, ProtocolError, Reason
from fedtee.wire import serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire.limits import WireLimits
from fedtee.wire.messages import ServerEvidence, ServerEvidenceRequest

NONCE = bytes(range(32))
EVIDENCE = Evidence(TeeType.TPM, b"\x01" * 100, {"signature": b"\x02" * 50})


def test_request_round_trip() -> None:
    req = ServerEvidenceRequest(nonce=NONCE, aux={"credential_blob": b"\x03" * 40})
    wire = pb.ServerEvidenceRequest.FromString(
        serde.server_evidence_request_to_proto(req).SerializeToString()
    )
    assert serde.server_evidence_request_from_proto(wire) == req


def test_reply_round_trip() -> None:
    reply = ServerEvidence(
        evidence=EVIDENCE, public_key=b"\x30" * 91, challenge_request={"ak_public": b"\x04" * 80}
    )
    wire = pb.ServerEvidence.FromString(serde.server_evidence_to_proto(reply).SerializeToString())
    assert serde.server_evidence_from_proto(wire) == reply


@pytest.mark.parametrize("size", [0, 15, 65, 1 << 16])
def test_nonce_outside_16_to_64_bytes_is_malformed(size: int) -> None:
    with pytest.raises(ProtocolError) as exc:
        serde.server_evidence_request_from_proto(pb.ServerEvidenceRequest(nonce=b"n" * size))
    assert exc.value.reason is Reason.MESSAGE_MALFORMED


def test_oversized_aux_is_refused_before_use() -> None:
    limits = WireLimits(max_challenge_aux_bytes=1024)
    big = {"credential_blob": b"x" * 1025}
    with pytest.raises(ProtocolError) as exc:
        serde.server_evidence_request_from_proto(
            pb.ServerEvidenceRequest(nonce=NONCE, aux=big), limits=limits
        )
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE
    with pytest.raises(ProtocolError) as exc:
        serde.server_evidence_from_proto(
            pb.ServerEvidence(
                evidence=serde.evidence_to_proto(EVIDENCE), public_key=b"k", challenge_request=big
            ),
            limits=limits,
        )
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE


def test_reply_without_evidence_or_key_is_malformed() -> None:
    with pytest.raises(ProtocolError):
        serde.server_evidence_from_proto(pb.ServerEvidence(public_key=b"k"))
    with pytest.raises(ProtocolError):
        serde.server_evidence_from_proto(
            pb.ServerEvidence(evidence=serde.evidence_to_proto(EVIDENCE))
        )


@given(st.binary(max_size=512))
def test_random_replies_raise_only_typed_errors(data: bytes) -> None:
    try:
        msg = pb.ServerEvidence.FromString(data)
    except Exception:  # protobuf's DecodeError: grpc's deserializer fails the call first
        return
    with contextlib.suppress(ProtocolError, EvidenceFormatError):
        serde.server_evidence_from_proto(msg)
