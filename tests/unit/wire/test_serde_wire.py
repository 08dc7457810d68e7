"""The messages that carry model bytes, written and read in wire format by fedtee.wire.serde:
byte-identical to protobuf's encoding, the same meaning as protobuf's parse for any bytes,
and the data read as a view of the received message (no copy)."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from fedtee.errors import ProtocolError, Reason
from fedtee.ledger.receipts import SignedReceipt
from fedtee.wire import serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire.limits import WireLimits
from fedtee.wire.messages import ModelChunk, UpdateHeader

U64 = (1 << 64) - 1
SIZES = [0, 1, 127, 128, 16_383, 16_384, 1 << 20]
NUMBERS = [0, 1, 127, 128, 300, 1 << 35, U64]


def _parsed(parse: Any, raw: bytes) -> Any:
    """``parse(raw)``, or the exception type it raised."""
    try:
        return parse(raw)
    except Exception as exc:
        return type(exc)


def _model_fields(msg: Any) -> Any:
    if isinstance(msg, type):
        return msg
    return (bytes(msg.data), msg.offset, msg.total_size)


def _update_fields(msg: Any) -> Any:
    if isinstance(msg, type):
        return msg
    if isinstance(msg, serde.UpdateDataView):
        return ("data", bytes(msg.data))
    part = msg.WhichOneof("part")
    return (part, msg.header.SerializeToString() if part == "header" else bytes(msg.data))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("offset", [0, 5, U64])
@pytest.mark.parametrize("total", [0, 1 << 20, U64])
def test_model_chunk_is_written_as_protobuf_writes_it_and_read_without_a_copy(
    size: int, offset: int, total: int
) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    chunk = ModelChunk(data=data, offset=offset, total_size=total)
    raw = serde.model_chunk_to_wire(chunk)
    assert raw == serde.model_chunk_to_proto(chunk).SerializeToString()
    view = serde.model_chunk_from_wire(raw)
    assert isinstance(view, serde.ModelChunkView)
    assert (bytes(view.data), view.offset, view.total_size) == (data, offset, total)
    if size:
        assert isinstance(view.data, memoryview) and view.data.obj is raw  # a view, no copy


@pytest.mark.parametrize("size", SIZES)
def test_update_data_is_written_as_protobuf_writes_it_and_read_without_a_copy(size: int) -> None:
    data = b"\xa5" * size
    raw = serde.update_data_to_wire(memoryview(data))
    assert raw == serde.update_data_to_proto(data).SerializeToString()
    view = serde.update_chunk_from_wire(raw)
    assert isinstance(view, serde.UpdateDataView)
    assert bytes(view.data) == data and view.data.obj is raw
    assert serde.update_data_from_proto(view) == data


def test_a_header_and_other_shapes_go_through_protobuf() -> None:
    header = serde.update_header_to_proto(
        UpdateHeader(receipt=SignedReceipt(receipt=b"r", signature=b"s"), size=9)
    )
    parsed = serde.update_chunk_from_wire(header.SerializeToString())
    assert isinstance(parsed, pb.UpdateChunk) and parsed.WhichOneof("part") == "header"
    # Data then a header: a oneof keeps the last, so this is a header, not data.
    both = serde.update_data_to_wire(b"abc") + header.SerializeToString()
    parsed = serde.update_chunk_from_wire(both)
    assert isinstance(parsed, pb.UpdateChunk) and parsed.WhichOneof("part") == "header"
    # Fields out of order, repeated, or unknown: protobuf's meaning.
    tail = b"\x18\x0a" + b"\x10\x03" + b"\x0a\x02hi"  # total, offset, then data
    assert _model_fields(serde.model_chunk_from_wire(tail)) == (b"hi", 3, 10)
    twice = b"\x10\x03\x10\x04"
    assert _model_fields(serde.model_chunk_from_wire(twice)) == (b"", 4, 0)
    unknown = b"\x0a\x01z" + b"\x20\x01"  # field 4
    assert _model_fields(serde.model_chunk_from_wire(unknown)) == (b"z", 0, 0)
    # A varint longer than it needs is the same number, as protobuf reads it.
    padded = b"\x10\x85\x80\x00"
    assert _model_fields(serde.model_chunk_from_wire(padded)) == _model_fields(
        pb.ModelChunk.FromString(padded)
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\x0a\x05abc",  # data shorter than its length
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # a length past 64 bits
        b"\x10\x80\x80",  # unterminated varint
        b"\x10" + b"\xff" * 10 + b"\x01",  # over 10 bytes
        b"\x12\x03ab",  # an update's data shorter than its length
        b"\x12",
    ],
)
def test_truncated_or_overlong_is_protobufs_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.ModelChunk.FromString(raw) if raw[:1] != b"\x12" else pb.UpdateChunk.FromString(raw)
    parse = serde.model_chunk_from_wire if raw[:1] != b"\x12" else serde.update_chunk_from_wire
    with pytest.raises(DecodeError):
        parse(raw)


def test_a_data_view_is_no_header_and_is_held_to_the_chunk_limit() -> None:
    view = serde.update_chunk_from_wire(serde.update_data_to_wire(b"x" * 4097))
    assert isinstance(view, serde.UpdateDataView)
    with pytest.raises(ProtocolError) as exc:
        serde.update_header_from_proto(view)
    assert exc.value.reason is Reason.MESSAGE_MALFORMED
    with pytest.raises(ProtocolError) as exc:
        serde.update_data_from_proto(view, limits=WireLimits(chunk_bytes=4096))
    assert exc.value.reason is Reason.MESSAGE_TOO_LARGE
    chunk = serde.model_chunk_from_wire(
        serde.model_chunk_to_wire(ModelChunk(data=b"abc", offset=9, total_size=10))
    )
    with pytest.raises(ProtocolError):
        serde.model_chunk_from_proto(chunk)  # runs past the declared size


def test_to_wire_passes_bytes_and_serialises_messages() -> None:
    assert serde.to_wire(b"\x12\x01x") == b"\x12\x01x"
    assert serde.to_wire(pb.UpdateChunk(data=b"x")) == b"\x12\x01x"


@given(st.binary(max_size=64))
def test_any_bytes_mean_what_protobuf_makes_of_them(raw: bytes) -> None:
    assert _model_fields(_parsed(serde.model_chunk_from_wire, raw)) == _model_fields(
        _parsed(pb.ModelChunk.FromString, raw)
    )
    assert _update_fields(_parsed(serde.update_chunk_from_wire, raw)) == _update_fields(
        _parsed(pb.UpdateChunk.FromString, raw)
    )


@given(
    st.binary(max_size=300),
    st.sampled_from(NUMBERS),
    st.sampled_from(NUMBERS),
    st.binary(max_size=4),
    st.integers(min_value=0, max_value=8),
)
def test_valid_messages_with_a_flipped_or_cut_tail_mean_what_protobuf_makes_of_them(
    data: bytes, offset: int, total: int, noise: bytes, cut: int
) -> None:
    raw = serde.model_chunk_to_wire(ModelChunk(data=data, offset=offset, total_size=total))
    for variant in (raw[: max(0, len(raw) - cut)], raw + noise):
        assert _model_fields(_parsed(serde.model_chunk_from_wire, variant)) == _model_fields(
            _parsed(pb.ModelChunk.FromString, variant)
        )
    upload = serde.update_data_to_wire(data)
    for variant in (upload[: max(0, len(upload) - cut)], upload + noise):
        assert _update_fields(_parsed(serde.update_chunk_from_wire, variant)) == _update_fields(
            _parsed(pb.UpdateChunk.FromString, variant)
        )
