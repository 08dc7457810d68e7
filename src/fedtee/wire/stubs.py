"""The fedtee.v1 Federation client stub, so that code outside :mod:`fedtee.wire` never imports
the generated modules (tests/unit/test_layers.py checks it). Works for a ``grpc.Channel`` and a
``grpc.aio.Channel`` alike; messages go through :mod:`fedtee.wire.serde`."""

from __future__ import annotations

from typing import Any

from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc


def federation_stub(channel: Any) -> Any:
    """A ``fedtee.v1.Federation`` stub over ``channel`` (sync or asyncio)."""
    factory: Any = pb_grpc.FederationStub
    return factory(channel)


__all__ = ["federation_stub"]
