"""The client's large-update path: read-only model views, a streamed digest that equals the
bytes sent, and phase events, against the in-memory fake server."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest

from fedtee import tensors
from fedtee.client.runtime import ClientEvent, ClientRuntime, RuntimeOptions
from fedtee.client.trainer import EvalResult, FitResult

from ._fakes import MEASUREMENT, FakeAttester, FakeServer


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
    runtime = ClientRuntime(
        client_id="c1",
        transport=server,
        attester=FakeAttester(),
        trainer=trainer,
        measurement=MEASUREMENT,
        options=RuntimeOptions(chunk_bytes=300),
        sleep=lambda _s: None,
        clock_ms=lambda: 1_000,
        on_event=events.append,
        rng=random.Random(0),
    )
    return runtime, events


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
