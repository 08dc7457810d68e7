"""The federation client: a Trainer API on named numpy arrays, and the runtime that attests,
enrols, trains and sends signed updates.

- :class:`Trainer` (``fit`` / ``evaluate``), :class:`FitResult`, :class:`EvalResult`,
  :class:`TrainerSpec`: the training-code side (:mod:`fedtee.client.trainer`);
- :class:`ClientRuntime`, :class:`RuntimeOptions`, :func:`measure_trainer`: the runtime
  (:mod:`fedtee.client.runtime`);
- :class:`Transport`, :class:`Session`, :class:`ServerUnavailable`: the network seam
  (:mod:`fedtee.client.transport`); the gRPC implementation is
  :class:`fedtee.client.grpc_transport.GrpcTransport`.

Cheating clients for demos and tests live apart, in :mod:`fedtee.client.cheats`.
"""

from fedtee.client.runtime import (
    ClientEvent,
    ClientRuntime,
    EnrolmentRejected,
    RunSummary,
    RuntimeOptions,
    measure_trainer,
)
from fedtee.client.trainer import EvalResult, FitResult, Trainer, TrainerSpec
from fedtee.client.transport import ServerUnavailable, Session, Transport

__all__ = [
    "ClientEvent",
    "ClientRuntime",
    "EnrolmentRejected",
    "EvalResult",
    "FitResult",
    "RunSummary",
    "RuntimeOptions",
    "ServerUnavailable",
    "Session",
    "Trainer",
    "TrainerSpec",
    "Transport",
    "measure_trainer",
]
