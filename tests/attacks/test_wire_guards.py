"""Bytes that are not a method's protobuf message are refused as message_malformed on every
RPC of the service (never gRPC's generic INTERNAL), and recorded where they could change a
model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fedtee.errors import Reason
from fedtee.eval import attacks
from fedtee.server.service import reason_of
from fedtee.wire import auth
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb

# Field 1, length-delimited, whose length varint never ends: no message parses it.
GARBAGE = b"\x0a" + b"\xff" * 11
METHODS = pb.DESCRIPTOR.services_by_name["Federation"].methods


@pytest.fixture
def arena(tmp_path: Path) -> Iterator[attacks.Arena]:
    a = attacks.Arena(tmp_path, settings=attacks.ArenaSettings(), insecure=False)
    a.start()
    try:
        yield a
    finally:
        a.close()


def _raw(channel: grpc.Channel, method: object) -> object:
    name = "/fedtee.v1.Federation/" + method.name  # type: ignore[attr-defined]
    kind = (method.client_streaming, method.server_streaming)  # type: ignore[attr-defined]
    make = {
        (False, False): channel.unary_unary,
        (False, True): channel.unary_stream,
        (True, False): channel.stream_unary,
    }[kind]
    return make(name, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def test_every_unary_request_method_refuses_garbage(arena: attacks.Arena) -> None:
    channel = arena.channel()
    try:
        for method in METHODS:
            if method.client_streaming:
                continue
            call = _raw(channel, method)
            with pytest.raises(grpc.RpcError) as exc:
                result = call(GARBAGE, timeout=10)  # type: ignore[operator]
                if method.server_streaming:
                    list(result)
            assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT, method.name
            assert reason_of(exc.value) == Reason.MESSAGE_MALFORMED.value, method.name
    finally:
        channel.close()
    store = arena.server.store if arena.server else None
    assert store is not None
    # Only the Enroll refusal is recorded: read-only calls cannot grow the ledger.
    assert [r.reason for r in store.rejections(attacks.FEDERATION)] == [Reason.MESSAGE_MALFORMED]


def test_a_garbage_chunk_in_an_upload_is_refused_and_recorded(arena: attacks.Arena) -> None:
    peer = arena.peer("a")
    assert peer.enroll().accepted and peer.session is not None
    channel = arena.channel()
    (submit,) = [m for m in METHODS if m.name == "SubmitUpdate"]
    metadata = auth.client_metadata(
        method="/fedtee.v1.Federation/SubmitUpdate",
        credential=peer.session.credential,
        private_key=peer.key,
        now_ms=int(time.time() * 1000),
    )
    try:
        reply = _raw(channel, submit)(iter([GARBAGE]), metadata=list(metadata), timeout=10)  # type: ignore[operator]
    finally:
        channel.close()
    result = pb.SubmitResult.FromString(reply)
    assert (result.accepted, result.reason) == (False, Reason.MESSAGE_MALFORMED.value)
    store = arena.server.store if arena.server else None
    assert store is not None
    assert [(r.client_id, r.reason) for r in store.rejections(attacks.FEDERATION)] == [
        ("a", Reason.MESSAGE_MALFORMED)
    ]
