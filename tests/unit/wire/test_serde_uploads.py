"""serde for compressed and resumable uploads: encodings, offsets and GetUploadStatus."""

from __future__ import annotations

import pytest

from fedtee.errors import ProtocolError, Reason
from fedtee.ledger.receipts import SignedReceipt
from fedtee.wire import serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire.messages import UpdateHeader, UploadStatus

SIGNED = SignedReceipt(receipt=b"r", signature=b"s")


def _header(**fields: object) -> pb.UpdateChunk:
    return pb.UpdateChunk(
        header=pb.UpdateHeader(receipt=pb.SignedReceipt(receipt=b"r", signature=b"s"), **fields)
    )


@pytest.mark.parametrize("encoding", ["safetensors", "f16", "int8", "topk", "topk+int8"])
def test_an_encoded_resumed_header_round_trips(encoding: str) -> None:
    header = UpdateHeader(receipt=SIGNED, size=1000, encoding=encoding, offset=640)
    wire = pb.UpdateChunk.FromString(serde.update_header_to_proto(header).SerializeToString())
    assert serde.update_header_from_proto(wire) == header


def test_an_empty_encoding_is_plain_safetensors() -> None:
    assert serde.update_header_from_proto(_header(size=10)).encoding == "safetensors"


@pytest.mark.parametrize(
    "fields",
    [
        {"size": 10, "encoding": "gzip"},
        {"size": 10, "encoding": "INT8"},
        {"size": 10, "offset": 10},  # nothing would follow
        {"size": 10, "offset": 1 << 40},
    ],
)
def test_unknown_encodings_and_offsets_past_the_size_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ProtocolError) as info:
        serde.update_header_from_proto(_header(**fields))
    assert info.value.reason in (Reason.UPDATE_MALFORMED, Reason.MESSAGE_MALFORMED)


def test_upload_status_round_trips_and_is_bounded() -> None:
    key = b"k" * 32
    request = pb.UploadStatusRequest.FromString(
        serde.upload_status_request_to_proto(key).SerializeToString()
    )
    assert serde.upload_status_request_from_proto(request) == key
    status = UploadStatus(committed=5, size=9)
    wire = pb.UploadStatus.FromString(serde.upload_status_to_proto(status).SerializeToString())
    assert serde.upload_status_from_proto(wire) == status
    with pytest.raises(ProtocolError):
        serde.upload_status_request_from_proto(pb.UploadStatusRequest(receipt_hash=b"short"))
    with pytest.raises(ProtocolError):
        serde.upload_status_from_proto(pb.UploadStatus(committed=10, size=9))
    with pytest.raises(ProtocolError) as info:
        serde.upload_status_from_proto(pb.UploadStatus(committed=0, size=1 << 40))
    assert info.value.reason is Reason.MESSAGE_TOO_LARGE
