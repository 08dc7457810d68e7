"""The demo model: a real federation over the digits data must reach >= 0.90 accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from fedtee.client.examples import digits
from fedtee.client.examples.digits_modified import ModifiedDigitsTrainer
from fedtee.client.trainer import Arrays
from fedtee.errors import ConfigError


def _fedavg(results: list[tuple[Arrays, int]]) -> Arrays:
    total = sum(n for _, n in results)
    names = results[0][0].keys()
    return {
        name: (sum(a[name].astype(np.float64) * n for a, n in results) / total).astype(np.float32)
        for name in names
    }


def test_partition_is_deterministic_disjoint_complete_and_skewed() -> None:
    labels = digits.train_set().labels
    parts = digits.dirichlet_partition(labels, num_partitions=5, seed=0)
    again = digits.dirichlet_partition(labels, num_partitions=5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(labels.shape[0]))  # disjoint and complete
    assert all(p.shape[0] > 0 for p in parts)
    # Non-IID: some client's most common label is far above the uniform 10 %.
    top_shares = [np.bincount(labels[p], minlength=10).max() / p.shape[0] for p in parts]
    assert max(top_shares) > 0.25
    other = digits.dirichlet_partition(labels, num_partitions=5, seed=1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_partition_rejects_bad_counts() -> None:
    labels = digits.train_set().labels
    with pytest.raises(ConfigError):
        digits.dirichlet_partition(labels, num_partitions=0, seed=0)
    with pytest.raises(ConfigError):
        digits.DigitsTrainer(partition=5, num_partitions=5)


def test_fedavg_over_5_non_iid_clients_reaches_090_in_10_rounds() -> None:
    trainers = [digits.DigitsTrainer(partition=k, num_partitions=5, seed=0) for k in range(5)]
    global_model = digits.initial_arrays(0)
    start = digits.global_accuracy(global_model)
    for _ in range(10):
        results = [t.fit(global_model, {}) for t in trainers]
        global_model = _fedavg([(r.arrays, r.num_examples) for r in results])
    final = digits.global_accuracy(global_model)
    assert start < 0.3
    assert final >= 0.90
    evaluated = trainers[0].evaluate(global_model, {"split": "test"})
    assert evaluated.metrics["accuracy"] == pytest.approx(final)
    assert evaluated.num_examples == len(digits.test_set())


def test_fit_does_not_mutate_input_and_respects_config() -> None:
    trainer = digits.DigitsTrainer(partition=0, num_partitions=3, seed=0)
    model = digits.initial_arrays(0)
    before = {k: v.copy() for k, v in model.items()}
    result = trainer.fit(model, {"local_epochs": "1", "lr": "0.1"})
    assert all(np.array_equal(before[k], model[k]) for k in model)
    assert result.num_examples == len(trainer.data)
    assert set(result.arrays) == {"weights", "bias"}
    assert result.arrays["weights"].dtype == np.float32
    with pytest.raises(ConfigError):
        trainer.fit(model, {"local_epochs": "0"})
    with pytest.raises(ConfigError):
        trainer.fit({"weights": model["weights"]}, {})


def test_modified_trainer_poisons_labels_and_has_a_different_file() -> None:
    honest = digits.DigitsTrainer(partition=0, num_partitions=1, seed=0)
    cheat = ModifiedDigitsTrainer(partition=0, num_partitions=1, seed=0)
    assert np.array_equal(honest.data.features, cheat.data.features)
    assert not np.array_equal(honest.data.labels, cheat.data.labels)
    assert np.array_equal(
        cheat.data.labels[honest.data.labels == 1], np.full(int((honest.data.labels == 1).sum()), 7)
    )


def test_data_is_exactly_scikit_learns_digits() -> None:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = digits.train_set(), digits.test_set()
    assert len(train) + len(test) == bunch.target.shape[0] == 1797
    assert sorted(np.concatenate([train.labels, test.labels]).tolist()) == sorted(
        bunch.target.tolist()
    )
    # Same rows: every training image is one of scikit-learn's, scaled to [0, 1].
    rows = {r.tobytes() for r in (bunch.data / 16.0).astype(np.float32)}
    assert all(r.tobytes() in rows for r in train.features)
