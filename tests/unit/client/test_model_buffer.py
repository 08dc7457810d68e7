"""The client reuses last round's model buffer for the next download only after a round
trained in place and when nothing holds a view of it any more; a trainer that kept views
keeps last round's bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import fedtee.client.runtime as runtime_module
from fedtee.client.trainer import EvalResult, FitResult, copy_arrays

from ._fakes import FakeServer, fake_runtime


class _InPlace:
    """Adds 1 to the received model in place; notes where it lay and what it held."""

    def __init__(self, *, keep: bool) -> None:
        self.keep = keep
        self.addresses: list[int] = []
        self.seen_max: list[float] = []
        self.kept: list[dict[str, NDArray[Any]]] = []

    def fit_in_place(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        self.addresses.append(arrays["weights"].__array_interface__["data"][0])
        self.seen_max.append(max(float(np.abs(a).max()) for a in arrays.values()))
        for array in arrays.values():
            array += 1
        if self.keep:
            self.kept.append(arrays)  # views of this round's buffer, kept past the round
        return FitResult(arrays=arrays, num_examples=1)

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        return self.fit_in_place(copy_arrays(arrays), config)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=1)


def _run(trainer: _InPlace, rounds: int, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Run ``rounds`` rounds; the sizes of the model buffers the runtime allocated."""
    server = FakeServer(rounds=rounds)
    allocated: list[int] = []
    empty = np.empty

    def counting_empty(shape: Any, dtype: Any = float, **kw: Any) -> Any:
        if np.dtype(dtype) == np.uint8 and shape == len(server.model):
            allocated.append(int(shape))
        return empty(shape, dtype=dtype, **kw)

    monkeypatch.setattr(runtime_module.np, "empty", counting_empty)
    runtime = fake_runtime(server, trainer, chunk_bytes=256)
    assert runtime.run().accepted == rounds
    return allocated


def test_last_rounds_buffer_is_reused_and_fully_rewritten(monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _InPlace(keep=False)
    assert len(_run(trainer, 3, monkeypatch)) == 1  # one buffer for all three rounds
    assert len(set(trainer.addresses)) == 1
    # Each round saw the downloaded (all-zero) model, not last round's trained bytes.
    assert trainer.seen_max == [0.0, 0.0, 0.0]


def test_a_trainer_that_kept_views_gets_a_fresh_buffer_and_keeps_its_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    trainer = _InPlace(keep=True)
    assert len(_run(trainer, 3, monkeypatch)) == 3
    assert len(set(trainer.addresses)) == 3
    assert trainer.seen_max == [0.0, 0.0, 0.0]
    for kept in trainer.kept:  # every round's views still hold that round's update
        assert all(bool((array == 1).all()) for array in kept.values())


class _Copying:
    """Trains a copy (no fit_in_place): the update is not in the received model's buffer."""

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        out = copy_arrays(arrays)
        for array in out.values():
            array += 1
        return FitResult(arrays=out, num_examples=1)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=1)


def test_a_buffer_is_kept_only_after_a_round_trained_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The received model is freed before the upload, and the next round allocates afresh.
    assert len(_run(_Copying(), 3, monkeypatch)) == 3  # type: ignore[arg-type]
