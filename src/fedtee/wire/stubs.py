"""The fedtee.v1 Federation client stub, so that code outside :mod:`fedtee.wire` never imports
the generated modules (tests/unit/test_layers.py checks it). Works for a ``grpc.Channel`` and a
``grpc.aio.Channel`` alike; messages go through :mod:`fedtee.wire.serde`.

The two methods that carry model bytes read and write them in wire format
(:func:`fedtee.wire.serde.model_chunk_from_wire`, ``update_data_to_wire``): DownloadModel
yields a ``ModelChunkView`` (or a ``ModelChunk`` message), and SubmitUpdate takes
``UpdateChunk`` messages and data already in wire format alike."""

from __future__ import annotations

from typing import Any

from fedtee.wire import serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc

_SERVICE = "/fedtee.v1.Federation/"


def federation_stub(channel: Any) -> Any:
    """A ``fedtee.v1.Federation`` stub over ``channel`` (sync or asyncio)."""
    factory: Any = pb_grpc.FederationStub
    stub = factory(channel)
    stub.DownloadModel = channel.unary_stream(
        _SERVICE + "DownloadModel",
        request_serializer=pb.ModelRequest.SerializeToString,
        response_deserializer=serde.model_chunk_from_wire,
    )
    stub.SubmitUpdate = channel.stream_unary(
        _SERVICE + "SubmitUpdate",
        request_serializer=serde.to_wire,
        response_deserializer=pb.SubmitResult.FromString,
    )
    return stub


__all__ = ["federation_stub"]
