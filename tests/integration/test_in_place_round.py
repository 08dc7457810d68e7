"""A round trained in the downloaded model's own memory (an InPlaceTrainer): the real runtime
against the real server over loopback TLS gRPC, with a model of a few MB (several 1 MiB
chunks each way) and an upload that is cut and resumed."""

from __future__ import annotations

import hashlib
import time
from typing import Any

import numpy as np
import pytest

from fedtee import tensors
from fedtee.client.runtime import ClientRuntime, RuntimeOptions
from fedtee.client.trainer import EvalResult, FitResult, InPlaceTrainer
from fedtee.ledger.log import verify_ledger
from fedtee.ledger.receipts import Receipt

from . import conftest
from .conftest import FED, GOOD, Harness
from .test_compressed_resumable import _cutting, _final_arrays

DELTA = np.float32(0.25)


def _model() -> dict[str, Any]:
    rng = np.random.default_rng(7)
    return {
        "w": rng.standard_normal((1000, 1000), dtype=np.float32),  # 4 MB
        "b": rng.standard_normal(1000, dtype=np.float32),
    }


class InPlaceAdd:
    """Adds DELTA where the arrays lie; records what it was handed."""

    def __init__(self) -> None:
        self.writable: list[bool] = []
        self.fit_calls = 0

    def fit_in_place(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        self.writable.extend(a.flags.writeable for a in arrays.values())
        for a in arrays.values():
            a += DELTA
        return FitResult(arrays=arrays, num_examples=10)

    def fit(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        self.fit_calls += 1
        return FitResult(arrays={k: v + DELTA for k, v in arrays.items()}, num_examples=10)

    def evaluate(self, arrays: dict[str, Any], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=10)


def test_an_in_place_round_of_a_few_mb_resumes_its_cut_upload_and_is_aggregated(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    initial = tensors.encode(_model())
    monkeypatch.setattr(conftest, "initial_model", lambda: initial)
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    transport = _cutting(harness, server, cut_after=2)  # two 1 MiB chunks, then the cut
    trainer = InPlaceAdd()
    assert isinstance(trainer, InPlaceTrainer)
    rounds = server.rounds
    assert rounds is not None

    def sleep_until_parked(_seconds: float) -> None:
        # The retry asks what arrived once the server has parked the cut upload (a client
        # that asks earlier is told nothing is held and resends from 0: correct, not tested).
        deadline = time.monotonic() + 10
        while not rounds._uploads and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        runtime = ClientRuntime(
            client_id="silo",
            transport=transport,
            attester=harness.att.attester(measurement=GOOD, platform=b""),
            trainer=trainer,
            measurement=GOOD,
            options=RuntimeOptions(max_wait_s=0.1, max_rounds=1),
            sleep=sleep_until_parked,
        )
        summary = runtime.run()
    finally:
        transport.close()

    assert summary.accepted == 1, summary
    assert trainer.writable == [True, True] and trainer.fit_calls == 0
    # The upload was cut after 2 MiB and only the rest was sent again.
    (first_offset, first_sent), (resume_offset, resent) = transport.attempts
    store = server.store
    assert store is not None
    [update] = store.updates(FED, 1)
    stored = (server.paths.artifacts / f"{update.update_digest.hex()}.safetensors").read_bytes()
    assert first_offset == 0 and first_sent == 2 << 20 < len(stored)
    assert resume_offset == first_sent and resent == len(stored) - resume_offset
    # The receipt names the model the client received (its buffer was overwritten since) and
    # exactly the bytes the server stored, which decode to the trained arrays.
    receipt = Receipt.decode(update.receipt)
    assert receipt.global_model_digest == hashlib.sha256(initial).digest()
    assert receipt.update_digest == hashlib.sha256(stored).digest() == update.update_digest
    expected = {k: v + DELTA for k, v in _model().items()}
    got = tensors.decode(stored)
    assert set(got) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(got[name], array)
        np.testing.assert_array_equal(_final_arrays(server, 1)[name], array)  # one client
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert [r.round for r in report.lineage] == [1]
