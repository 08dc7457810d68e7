"""The client's large-update path: read-only model views, a streamed digest that equals the
bytes sent, and phase events, against the in-memory fake server."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedtee import tensors
from fedtee.client.runtime import ClientEvent, ClientRuntime, RuntimeOptions
from fedtee.client.trainer import EvalResult, FitResult

from ._fakes import FakeServer, fake_runtime


class Recorder:
    """Returns the global model + 1 and remembers what it was given."""

    def __init__(self, *, mutate: bool = False) -> None:
        self.mutate = mutate
        self.seen: dict[str, Any] = {}

    def fit(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        self.seen = arrays
        if self.mutate:
            arrays["weights"][0, 0] = 5.0  # a trainer that breaks the contract
        return FitResult(arrays={k: v + np.float32(1) for k, v in arrays.items()}, num_examples=3)

    def evaluate(self, arrays: dict[str, Any], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=3)


def _runtime(server: FakeServer, trainer: Recorder) -> tuple[ClientRuntime, list[ClientEvent]]:
    events: list[ClientEvent] = []
    return fake_runtime(server, trainer, chunk_bytes=300, on_event=events.append), events


def test_the_trainer_sees_read_only_views_and_the_upload_is_the_digested_bytes() -> None:
    server = FakeServer(rounds=1)
    trainer = Recorder()
    runtime, events = _runtime(server, trainer)
    summary = runtime.run()
    assert summary.accepted == 1, summary
    assert all(not a.flags.writeable for a in trainer.seen.values())
    kinds = [e.kind for e in events if e.round == 1]
    assert kinds.index("trained") < kinds.index("uploading") < kinds.index("update_accepted")
    # The fake server joined what arrived, re-hashed it against the receipt and decoded it.
    assert server.submitted == [(1, "accepted")]


def test_a_trainer_that_writes_into_the_global_model_fails_loudly() -> None:
    server = FakeServer(rounds=1)
    runtime, _ = _runtime(server, Recorder(mutate=True))
    with pytest.raises(ValueError, match="read-only"):
        runtime.run()


def test_make_update_streams_the_same_bytes_it_digests() -> None:
    server = FakeServer(rounds=1)
    runtime, _ = _runtime(server, Recorder())
    session = runtime.enroll()
    task = server.get_task(session=session)
    model = runtime.download(session, task)
    signed, update = runtime.make_update(session, task, model)
    from fedtee.ledger.receipts import verify_receipt

    receipt = verify_receipt(signed, server.keys["c1"])
    sent = b"".join(update.chunks(300))
    assert receipt.update_digest == tensors.digest(sent) == update.digest()
    assert np.allclose(tensors.decode(sent)["weights"], 1.0)


class InPlaceRecorder(Recorder):
    """An InPlaceTrainer: adds 1 where the arrays lie; counts which entry point ran."""

    def __init__(self) -> None:
        super().__init__()
        self.in_place_calls = 0
        self.fit_calls = 0

    def fit(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        self.fit_calls += 1
        return super().fit(arrays, config)

    def fit_in_place(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        self.in_place_calls += 1
        self.seen = arrays
        for a in arrays.values():
            a += np.float32(1)
        return FitResult(arrays=arrays, num_examples=3)


def test_an_in_place_trainer_trains_the_downloaded_buffer_and_that_is_what_is_sent() -> None:
    server = FakeServer(rounds=1)
    trainer = InPlaceRecorder()
    runtime, _ = _runtime(server, trainer)
    session = runtime.enroll()
    task = server.get_task(session=session)
    model = runtime.download(session, task)
    signed, update = runtime.make_update(session, task, model)
    from fedtee.ledger.receipts import verify_receipt

    assert (trainer.in_place_calls, trainer.fit_calls) == (1, 0)
    assert all(a.flags.writeable for a in trainer.seen.values())
    # The downloaded buffer itself now holds the trained values: no second model buffer.
    assert np.allclose(tensors.decode(model)["weights"], 1.0)
    receipt = verify_receipt(signed, server.keys["c1"])
    assert receipt.global_model_digest == tensors.digest(server.model)  # what was received
    sent = b"".join(update.chunks(300))
    assert receipt.update_digest == tensors.digest(sent)
    assert np.allclose(tensors.decode(sent)["weights"], 1.0)
    assert np.allclose(tensors.decode(sent)["bias"], 1.0)


def test_an_in_place_trainer_gets_read_only_views_when_the_global_model_is_still_needed() -> None:
    from fedtee.codec import Encoding

    # A compressed update is a delta against the global model, so it must survive training.
    server = FakeServer(rounds=1)
    trainer = InPlaceRecorder()
    runtime, _ = _runtime(server, trainer)
    runtime.options = RuntimeOptions(chunk_bytes=300, encoding=Encoding.INT8)
    session = runtime.enroll()
    task = server.get_task(session=session)
    model = runtime.download(session, task)
    runtime.make_update(session, task, model)
    assert (trainer.in_place_calls, trainer.fit_calls) == (0, 1)
    assert all(not a.flags.writeable for a in trainer.seen.values())
    assert bytes(model) == server.model
    # A read-only model (bytes) is never trained in place either.
    trainer = InPlaceRecorder()
    runtime, _ = _runtime(server, trainer)
    runtime.make_update(runtime.enroll(), task, server.model)
    assert (trainer.in_place_calls, trainer.fit_calls) == (0, 1)


def test_a_whole_in_place_run_is_accepted_by_the_checking_fake_server() -> None:
    server = FakeServer(rounds=2)
    trainer = InPlaceRecorder()
    runtime, _ = _runtime(server, trainer)
    summary = runtime.run()
    assert summary.accepted == 2 and server.submitted == [(1, "accepted"), (2, "accepted")]
    assert trainer.in_place_calls == 2
