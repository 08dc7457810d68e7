"""Tests for fedtee.server.strategy: streaming weighted FedAvg."""

from __future__ import annotations

import ast
import itertools
import tracemalloc
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fedtee.server.strategy as strategy_module
from fedtee import codec
from fedtee.codec import Encoding
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


@pytest.mark.parametrize("together", [False, True], ids=["accumulate", "accumulate_many"])
def test_memory_does_not_grow_with_number_of_clients(together: bool) -> None:
    shape = (512, 512)  # 2 MiB per float64 accumulator tensor
    spec = ModelSpec.of({"w": np.zeros(shape, np.float32)})
    updates = [{"w": np.full(shape, float(i), dtype=np.float32)} for i in range(40)]

    threads = 2  # this 2 MiB tensor is 16 blocks: folded in 2 ranges, each with its stage

    def peak(n_clients: int) -> int:
        strategy = FedAvg(fold_threads=threads)
        tracemalloc.start()
        strategy.begin(spec)
        if together:
            strategy.accumulate_many([(u, 1) for u in updates[:n_clients]])
        else:
            for update in updates[:n_clients]:
                strategy.accumulate(update, 1)
        strategy.finalize()
        _, peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return peak_bytes

    few, many = peak(3), peak(40)
    model_bytes = 512 * 512 * 8
    stage_bytes = (strategy_module.GROUP + 1) * strategy_module.BLOCK * 8 * threads
    assert many < few + model_bytes // 4
    # The accumulator (the new model is written over it) and a stage a thread: not 40 models.
    assert many < model_bytes + stage_bytes + model_bytes // 4


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("size", [1, strategy_module.BLOCK - 1, strategy_module.BLOCK * 3 + 5])
def test_finalize_narrows_in_the_accumulator_exactly_as_one_division(
    dtype: type, size: int
) -> None:
    # The float64 sum divided once and rounded once to the model's dtype, bit for bit, even
    # though the result is written over the accumulator's own buffer block by block.
    rng = np.random.default_rng(size)
    updates: list[dict[str, np.ndarray]] = [
        {"w": (rng.standard_normal((size, 1)) * 50).astype(dtype)} for _ in range(3)
    ]
    weights = [3, 1, 7]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    result = strategy.finalize()["w"]
    pairs = zip(updates, weights, strict=True)
    acc = np.zeros((size, 1), np.float64)
    for u, k in pairs:
        acc += np.float64(k) * u["w"].astype(np.float64)
    expected = (acc / float(sum(weights))).astype(dtype)
    assert result.dtype == dtype and result.shape == (size, 1)
    np.testing.assert_array_equal(result, expected)


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


# --- accumulate_many: the round close's block-by-block path -------------------------------


class _Counting(Mapping[str, np.ndarray]):
    """An update that counts how often each tensor is read (a seam for read-once checks)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._arrays = arrays
        self.reads: dict[str, int] = {}
        self.releases = 0

    def __getitem__(self, name: str) -> np.ndarray:
        self.reads[name] = self.reads.get(name, 0) + 1
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


class _Releasing(_Counting):
    def release(self) -> None:
        self.releases += 1


def _mixed(seed: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal(n).astype(np.float32),
        "h": rng.standard_normal((3, 5)).astype(np.float16),
        "d": rng.standard_normal((2, 2)),  # float64
        "i": rng.integers(-50, 50, (3, 7)),
        "u": rng.integers(0, 255, (4,)).astype(np.uint8),
        "s": np.array(rng.standard_normal(), dtype=np.float32),  # 0-d
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def _reference(updates: list[dict[str, np.ndarray]], weights: list[int]) -> dict[str, np.ndarray]:
    out = {}
    for name, first in updates[0].items():
        stacked = np.stack([u[name].astype(np.float64) for u in updates])
        mean = np.tensordot(np.array(weights, np.float64), stacked, axes=1) / sum(weights)
        out[name] = np.rint(mean).astype(first.dtype) if first.dtype.kind in "iu" else mean
    return out


@pytest.mark.parametrize("accumulator", ["float64", "float32"])
def test_accumulate_many_matches_numpy_across_groups_blocks_and_dtypes(accumulator: str) -> None:
    # More updates than a group, a tensor spanning blocks with a ragged tail, and every dtype.
    n_updates = strategy_module.GROUP * 2 + 5
    updates = [_mixed(seed, strategy_module.BLOCK * 2 + 37) for seed in range(n_updates)]
    weights = [int(k) for k in np.random.default_rng(9).integers(1, 1000, n_updates)]
    strategy = FedAvg(accumulator=accumulator)
    strategy.begin(ModelSpec.of(updates[0]))
    strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    assert strategy.num_updates == n_updates and strategy.total_examples == sum(weights)
    result = strategy.finalize()
    expected = _reference(updates, weights)
    assert ModelSpec.of(result) == ModelSpec.of(updates[0])
    for name in ("i", "u"):
        np.testing.assert_array_equal(result[name], expected[name])
    np.testing.assert_allclose(result["d"], expected["d"], rtol=1e-12)
    np.testing.assert_allclose(result["h"], expected["h"].astype(np.float16), rtol=1e-3)
    tol = 1e-6 if accumulator == "float64" else n_updates * 6e-8 * 50
    np.testing.assert_allclose(result["w"], expected["w"], rtol=tol, atol=tol)
    np.testing.assert_allclose(result["s"], expected["s"], rtol=tol)
    assert result["empty"].shape == (0, 3)


def test_accumulate_many_reads_each_tensor_once_and_releases_mapped_updates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(strategy_module, "WINDOW_BYTES", 4 * strategy_module.BLOCK * 4)
    n = strategy_module.BLOCK * 20
    updates = [_Releasing(_mixed(seed, n)) for seed in range(5)]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(_mixed(0, n)))
    strategy.accumulate_many([(u, 1) for u in updates])
    for u in updates:
        assert u.reads == dict.fromkeys(_mixed(0, n), 1)
        # 20 blocks of "w" in windows of 4 blocks / 5 updates -> released every block or so.
        assert u.releases >= 5
    np.testing.assert_allclose(
        strategy.finalize()["w"],
        _reference([_mixed(s, n) for s in range(5)], [1] * 5)["w"],
        rtol=1e-6,
    )


class _Readable(dict):  # type: ignore[type-arg]
    """An update whose tensors the fold must take from block_reader (its arrays lie)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        super().__init__({k: np.zeros_like(v) for k, v in arrays.items()})
        self.true = arrays
        self.blocks = 0

    def block_reader(self, name: str) -> Any:
        if name == "h":
            return None  # this tensor is read from its array (zeros here)

        def read(start: int, out: np.ndarray) -> None:
            self.blocks += 1
            out[...] = self.true[name].reshape(-1)[start : start + out.size]

        return read


@pytest.mark.parametrize("threads", [1, 2])
def test_accumulate_many_takes_block_readers_data_on_any_thread(threads: int) -> None:
    n = strategy_module.BLOCK * strategy_module.PARALLEL_BLOCKS * 2 + 5  # parallel ranges
    plain = [_mixed(seed, n) for seed in range(3)]
    readable = [_Readable(u) for u in plain]
    strategy = FedAvg(fold_threads=threads)
    strategy.begin(ModelSpec.of(plain[0]))
    strategy.accumulate_many([(u, 1) for u in readable])
    result = strategy.finalize()
    expected = _reference(plain, [1, 1, 1])
    np.testing.assert_allclose(result["w"], expected["w"], rtol=1e-6)
    np.testing.assert_array_equal(result["i"], expected["i"])
    np.testing.assert_array_equal(result["h"], np.zeros((3, 5), np.float16))  # no reader
    assert all(u.blocks >= n // strategy_module.BLOCK for u in readable)


def test_parallel_fold_threads_share_one_release_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """With T threads each releases after WINDOW_BYTES / T of reading, so the pages resident
    across all of them stay within WINDOW_BYTES: T threads release about T times as often."""
    block_bytes = 3 * strategy_module.BLOCK * 4  # one block of each of 3 float32 updates
    monkeypatch.setattr(strategy_module, "WINDOW_BYTES", 8 * block_bytes)
    n = strategy_module.BLOCK * strategy_module.PARALLEL_BLOCKS * 4
    releases = {}
    for threads in (1, 4):
        updates = [_Releasing({"w": np.full(n, seed, np.float32)}) for seed in range(3)]
        strategy = FedAvg(fold_threads=threads)
        strategy.begin(ModelSpec.of(updates[0]))
        strategy.accumulate_many([(u, 1) for u in updates])
        np.testing.assert_array_equal(strategy.finalize()["w"], np.full(n, 1.0, np.float32))
        releases[threads] = updates[0].releases
    # 64 blocks: one thread releases every 8 (8 times); 4 threads every 2 blocks of their 16.
    assert releases[1] == 8
    assert releases[4] == 4 * 8


@pytest.mark.parametrize("encoding", [e for e in Encoding if e is not Encoding.SAFETENSORS])
def test_accumulate_many_folds_compressed_updates_decoding_each_tensor_once(
    encoding: Encoding,
) -> None:
    rng = np.random.default_rng(3)
    global_arrays = {
        "w": rng.standard_normal(strategy_module.BLOCK + 9).astype(np.float32),
        "b": rng.standard_normal(7).astype(np.float32),
        "steps": np.array([3], dtype=np.int64),
    }
    spec = ModelSpec.of(global_arrays)
    opened = []
    for seed in range(4):
        step = np.random.default_rng(seed)
        trained = {
            "w": global_arrays["w"]
            + step.normal(0, 0.1, global_arrays["w"].shape).astype(np.float32),
            "b": global_arrays["b"] + np.float32(seed),
            "steps": global_arrays["steps"] + seed,
        }
        data = codec.encode_update(trained, global_arrays=global_arrays, encoding=encoding)
        opened.append(_Counting(codec.open_update(data, spec=spec, global_arrays=global_arrays)))
    decoded = [{k: np.array(u._arrays[k]) for k in spec.tensors} for u in opened]
    weights = [2, 5, 1, 3]
    strategy = FedAvg()
    strategy.begin(spec)
    strategy.accumulate_many(list(zip(opened, weights, strict=True)))
    for u in opened:
        assert u.reads == {"w": 1, "b": 1, "steps": 1}
    result = strategy.finalize()
    expected = _reference(decoded, weights)
    np.testing.assert_allclose(result["w"], expected["w"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result["b"], expected["b"], rtol=1e-6)
    np.testing.assert_array_equal(result["steps"], expected["steps"])


def _folded(updates: list[dict[str, np.ndarray]], weights: list[int]) -> dict[str, np.ndarray]:
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    return strategy.finalize()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_accumulate_many_rejection_part_way_leaves_only_the_updates_before_it(bad: float) -> None:
    # The bad value sits in the last block of the last tensor, so blocks of the bad update
    # (and of later ones) were already added when it is found.
    n = strategy_module.BLOCK * 3 + 5
    updates = [_mixed(seed, n) for seed in range(strategy_module.GROUP + 6)]
    weights = list(range(1, len(updates) + 1))
    k = strategy_module.GROUP + 2  # in the second group
    updates[k]["w"][-2] = bad
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    with pytest.raises(UpdateRejected) as err:
        strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    assert err.value.reason is Reason.UPDATE_NONFINITE
    assert strategy.num_updates == k and strategy.total_examples == sum(weights[:k])
    result = strategy.finalize()
    expected = _folded(updates[:k], weights[:k])
    for name in result:
        np.testing.assert_array_equal(result[name], expected[name])


def test_accumulate_many_raises_for_the_first_bad_update_in_order() -> None:
    # Update 1 is bad in a later tensor than update 3, which the walk meets first.
    n = strategy_module.BLOCK + 1
    updates = [_mixed(seed, n) for seed in range(5)]
    updates[1]["w"][-1] = np.nan  # "w" is walked after "d", "empty", "h", "i", "s", "u"
    updates[3]["d"][0, 0] = np.inf
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    with pytest.raises(UpdateRejected, match="'w'"):
        strategy.accumulate_many([(u, 1) for u in updates])
    assert strategy.num_updates == 1
    np.testing.assert_array_equal(strategy.finalize()["w"], updates[0]["w"])


def test_accumulate_many_rejects_shapes_names_and_counts_like_accumulate() -> None:
    good = [_model(i) for i in range(3)]
    cases: list[tuple[dict[str, np.ndarray], int, Reason]] = [
        ({**_model(5), "b": np.zeros(5, np.float32)}, 1, Reason.UPDATE_SHAPE_MISMATCH),
        ({**_model(5), "b": np.zeros(4, np.float64)}, 1, Reason.UPDATE_SHAPE_MISMATCH),
        ({"w": _model(5)["w"], "b": _model(5)["b"]}, 1, Reason.UPDATE_SHAPE_MISMATCH),
        (_model(5), 0, Reason.UPDATE_MALFORMED),
    ]
    for bad, count, reason in cases:
        strategy = FedAvg()
        strategy.begin(ModelSpec.of(good[0]))
        with pytest.raises(UpdateRejected) as err:
            strategy.accumulate_many([(good[0], 2), (good[1], 3), (bad, count), (good[2], 4)])
        assert err.value.reason is reason
        assert strategy.num_updates == 2
        np.testing.assert_array_equal(strategy.finalize()["w"], _folded(good[:2], [2, 3])["w"])


def test_accumulate_and_accumulate_many_mix_in_one_round() -> None:
    updates = [_model(i) for i in range(6)]
    strategy = FedAvg()
    strategy.begin(ModelSpec.of(updates[0]))
    strategy.accumulate_many([(u, 1) for u in updates[:3]])
    strategy.accumulate(updates[3], 1)
    strategy.accumulate_many([(u, 1) for u in updates[4:]])  # not fresh: one at a time
    result = strategy.finalize()
    np.testing.assert_allclose(result["w"], _reference(updates, [1] * 6)["w"], rtol=1e-6)


# --- folding one large tensor on several threads ----------------------------------------------

LARGE = strategy_module.BLOCK * strategy_module.PARALLEL_BLOCKS * 2 + 123  # 32 blocks + a tail


def _large(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "big": rng.standard_normal(LARGE).astype(np.float32),
        "small": rng.standard_normal(7).astype(np.float32),
    }


def _fold(updates: list[dict[str, np.ndarray]], weights: list[int], threads: int) -> FedAvg:
    strategy = FedAvg(fold_threads=threads)
    strategy.begin(ModelSpec.of(updates[0]))
    strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    return strategy


def test_a_large_tensor_folds_on_several_threads_to_the_same_bits_as_on_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    ranges: list[tuple[str, int, int]] = []
    real = FedAvg._fold_range

    def recorded(self: FedAvg, name: str, acc: np.ndarray, *args: object) -> None:
        lo, hi = args[3], args[4]  # after group, readers, weights
        assert isinstance(lo, int) and isinstance(hi, int)
        ranges.append((threading.current_thread().name, lo, hi))
        real(self, name, acc, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(FedAvg, "_fold_range", recorded)
    n = strategy_module.GROUP + 3  # two groups: the second adds to what the first wrote
    updates = [_large(seed) for seed in range(n)]
    weights = [int(k) for k in np.random.default_rng(3).integers(1, 100, n)]
    parallel = _fold(updates, weights, threads=4).finalize()
    on_fold_threads = [r for r in ranges if r[0].startswith("fedtee-fold")]
    # Both groups of "big" in 4 contiguous ranges of whole blocks that cover it exactly.
    assert len(on_fold_threads) == 8
    for group in (on_fold_threads[:4], on_fold_threads[4:]):
        bounds = sorted((lo, hi) for _, lo, hi in group)
        assert bounds[0][0] == 0 and bounds[-1][1] == LARGE
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        assert all(lo % strategy_module.BLOCK == 0 for lo, _ in bounds)
    ranges.clear()
    serial = _fold(updates, weights, threads=1).finalize()
    assert all(not name.startswith("fedtee-fold") for name, _, _ in ranges)
    for name in serial:  # the same operations on the same blocks: the same bits
        np.testing.assert_array_equal(parallel[name], serial[name])
    expected = _reference(updates, weights)
    np.testing.assert_allclose(parallel["big"], expected["big"], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("threads", [2, 4])
def test_a_rejection_in_any_range_rebuilds_the_sum_without_the_bad_update(threads: int) -> None:
    updates = [_large(seed) for seed in range(6)]
    weights = [1, 2, 3, 4, 5, 6]
    updates[4]["big"][1] = np.nan  # in the first range
    updates[2]["big"][-1] = np.inf  # in the last range: the lower index is reported
    strategy = FedAvg(fold_threads=threads)
    strategy.begin(ModelSpec.of(updates[0]))
    with pytest.raises(UpdateRejected) as err:
        strategy.accumulate_many(list(zip(updates, weights, strict=True)))
    assert err.value.reason is Reason.UPDATE_NONFINITE
    assert strategy.num_updates == 2 and strategy.total_examples == 3
    result = strategy.finalize()
    serial = _fold(updates[:2], weights[:2], threads=1).finalize()
    for name in result:
        np.testing.assert_array_equal(result[name], serial[name])


@pytest.mark.parametrize("threads", [0, strategy_module.MAX_FOLD_THREADS + 1])
def test_fold_threads_out_of_range_is_refused(threads: int) -> None:
    with pytest.raises(ValueError, match="fold_threads"):
        FedAvg(fold_threads=threads)
