"""Tests for fedtee.server.strategy: streaming weighted FedAvg."""

from __future__ import annotations

import ast
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedtee.server.strategy as strategy_module
from fedtee.errors import Reason, UpdateRejected
from fedtee.server.strategy import FedAvg, Strategy
from fedtee.tensors import ModelSpec


def _model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((5, 4)).astype(np.float32),
        "b": rng.standard_normal(4).astype(np.float32),
        "count": np.array([seed], dtype=np.int64),
    }


def test_fedavg_is_a_strategy() -> None:
    assert isinstance(FedAvg(), Strategy)


def test_weighted_average_matches_numpy() -> None:
    updates = [_model(i) for i in range(7)]
    weights = [3, 10, 1, 7, 2, 9, 4]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    for u, n in zip(updates, weights, strict=True):
        strategy.accumulate(u, n)
    result = strategy.finalize()
    for name in ("w", "b"):
        expected = np.average(
            np.stack([u[name].astype(np.float64) for u in updates]), axis=0, weights=weights
        )
        assert result[name].dtype == np.float32
        np.testing.assert_allclose(result[name], expected.astype(np.float32), rtol=1e-6)
    expected_count = np.rint(np.average([u["count"][0] for u in updates], weights=weights))
    assert result["count"].dtype == np.int64
    assert result["count"][0] == expected_count
    with pytest.raises(ValueError):  # finalize resets: a round cannot be finalised twice
        strategy.finalize()


def test_finalize_without_updates_raises() -> None:
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(_model(0)))
    with pytest.raises(ValueError, match="no updates"):
        strategy.finalize()


def test_accumulate_rejects_mismatched_update_and_bad_count() -> None:
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(_model(0)))
    bad = {**_model(1), "b": np.zeros(5, np.float32)}
    with pytest.raises(UpdateRejected) as err:
        strategy.accumulate(bad, 1)
    assert err.value.reason is Reason.UPDATE_SHAPE_MISMATCH
    for n in (0, -1, True):
        with pytest.raises(UpdateRejected) as err:
            strategy.accumulate(_model(1), n)
        assert err.value.reason is Reason.UPDATE_MALFORMED
    assert strategy.num_updates == 0


def test_rejected_update_leaves_accumulator_untouched() -> None:
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(_model(0)))
    strategy.accumulate(_model(1), 2)
    nan = _model(2)
    nan["w"][0, 0] = np.nan
    with pytest.raises(UpdateRejected):
        strategy.accumulate(nan, 5)
    result = strategy.finalize()
    np.testing.assert_allclose(result["w"], _model(1)["w"])


def test_memory_does_not_grow_with_number_of_clients() -> None:
    shape = (256, 256)  # 512 KiB per float64 tensor
    spec = ModelSpec.of({"w": np.zeros(shape, np.float32)})

    def peak(n_clients: int) -> int:
        strategy = FedAvg()
        tracemalloc.start()
        strategy.begin(spec)
        for i in range(n_clients):
            update = {"w": np.full(shape, float(i), dtype=np.float32)}
            strategy.accumulate(update, 1)
            del update
        strategy.finalize()
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak_bytes

    few, many = peak(3), peak(40)
    model_bytes = 256 * 256 * 8
    assert many < few + model_bytes // 4
    assert many < 6 * model_bytes  # a handful of model-sized buffers, not 40


def test_configure_round_rotates_a_window() -> None:
    clients = [f"c{i}" for i in range(5)]
    strategy = FedAvg(clients_per_round=2)
    picks = [strategy.configure_round(r, clients) for r in range(5)]
    assert all(len(p) == 2 for p in picks)
    assert {c for p in picks for c in p} == set(clients)
    assert strategy.configure_round(3, list(reversed(clients))) == picks[3]
    assert FedAvg().configure_round(0, ["b", "a", "a"]) == ["a", "b"]


def test_strategy_module_never_imports_attest() -> None:
    tree = ast.parse(Path(strategy_module.__file__).read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    assert "fedtee.tensors" in names
    assert not any(name.startswith("fedtee.attest") for name in names)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(1, 1000), min_size=1, max_size=12),
    st.lists(st.integers(1, 5), min_size=1, max_size=3),
)
def test_fedavg_property_matches_numpy_average(weights: list[int], shape: list[int]) -> None:
    rng = np.random.default_rng(len(weights) * 7 + sum(shape))
    updates = [rng.standard_normal(shape) for _ in weights]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of({"x": updates[0]}))
    for u, n in zip(updates, weights, strict=True):
        strategy.accumulate({"x": u}, n)
    result = strategy.finalize()["x"]
    np.testing.assert_allclose(result, np.average(np.stack(updates), axis=0, weights=weights))


def test_blockwise_average_spans_blocks_and_matches_numpy() -> None:
    # Sizes around and across the block boundary, including a ragged last block.
    n = strategy_module.BLOCK * 2 + 37
    rng = np.random.default_rng(5)
    updates = [
        {"w": rng.standard_normal(n).astype(np.float32), "i": rng.integers(-50, 50, (3, 7))}
        for _ in range(4)
    ]
    weights = [1, 4, 9, 2]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    for u, k in zip(updates, weights, strict=True):
        strategy.accumulate(u, k)
    result = strategy.finalize()
    for name in ("w", "i"):
        expected = np.average(
            np.stack([u[name].astype(np.float64) for u in updates]), axis=0, weights=weights
        )
        if name == "i":
            expected = np.rint(expected)
        np.testing.assert_allclose(result[name], expected.astype(result[name].dtype), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_in_a_late_block_is_rejected_before_anything_is_added(
    dtype: type, bad: float
) -> None:
    n = strategy_module.BLOCK * 3 + 5
    good = {"w": np.linspace(-1, 1, n).astype(dtype)}
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(good))
    strategy.accumulate(good, 3)
    poisoned = {"w": good["w"].copy()}
    poisoned["w"][-2] = bad  # in the last block: the first blocks are all finite
    with pytest.raises(UpdateRejected) as err:
        strategy.accumulate(poisoned, 7)
    assert err.value.reason is Reason.UPDATE_NONFINITE
    assert strategy.num_updates == 1
    reference = FedAvg()
    reference.begin(ModelSpec.of(good))
    reference.accumulate(good, 3)
    np.testing.assert_array_equal(strategy.finalize()["w"], reference.finalize()["w"])


def test_large_finite_float32_values_are_not_mistaken_for_overflow() -> None:
    big = np.finfo(np.float32).max
    update = {"w": np.full(strategy_module.BLOCK + 3, big, dtype=np.float32)}
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(update))
    strategy.accumulate(update, 1000)  # n * w overflows float32, not the float64 sum
    assert np.all(strategy.finalize()["w"] == big)


def test_float32_accumulator_stays_close_to_float64() -> None:
    rng = np.random.default_rng(11)
    n = strategy_module.BLOCK + 99
    updates = [{"w": rng.standard_normal(n).astype(np.float32)} for _ in range(50)]
    weights = [int(k) for k in rng.integers(1, 1000, 50)]
    results = {}
    for acc in ("float64", "float32"):
        strategy = FedAvg(accumulator=acc)
        strategy.begin(ModelSpec.of(updates[0]))
        for u, k in zip(updates, weights, strict=True):
            strategy.accumulate(u, k)
        results[acc] = strategy.finalize()["w"]
        assert results[acc].dtype == np.float32
    exact = np.average(
        np.stack([u["w"] for u in updates]).astype(np.float64), axis=0, weights=weights
    )
    np.testing.assert_allclose(results["float64"], exact.astype(np.float32), rtol=1e-6)
    # 50 updates: float32 rounding in the running sum stays within 50 ulps of the scale.
    np.testing.assert_allclose(results["float32"], exact, atol=50 * 6e-8 * np.abs(exact).max())
    with pytest.raises(ValueError):
        FedAvg(accumulator="float16")
