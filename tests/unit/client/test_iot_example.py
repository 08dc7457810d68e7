"""The IoT example trainer (fedtee.client.examples.iot): it learns, and its batched scoring is
the same cross-entropy and accuracy as one pass over all readings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedtee.client.examples import iot
from fedtee.errors import ConfigError


def _full_batch_score(arrays: dict[str, np.ndarray], t: iot.IotTrainer) -> tuple[float, float]:
    x = t.data.features.astype(np.float64)
    hidden = np.maximum(x @ arrays["w1"] + arrays["b1"], 0)
    logits = hidden @ arrays["w2"] + arrays["b2"]
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    picked = probs[np.arange(len(t.data.labels)), t.data.labels]
    picked = np.clip(picked, 1e-12, 1.0)  # as the trainer does
    return float(-np.mean(np.log(picked))), float(np.mean(probs.argmax(1) == t.data.labels))


def test_batched_scoring_equals_one_pass_over_all_readings() -> None:
    trainer = iot.IotTrainer(partition=3, num_partitions=8, seed=5)
    arrays = trainer.fit(iot.initial_arrays(), {}).arrays
    result = trainer.evaluate(arrays, {})
    loss, accuracy = _full_batch_score(arrays, trainer)
    assert result.num_examples == iot.SAMPLES_PER_CLIENT
    assert result.loss == pytest.approx(loss, rel=1e-4)
    assert result.metrics["accuracy"] == pytest.approx(accuracy)


def test_fit_lowers_the_loss_and_returns_the_model_shapes() -> None:
    trainer = iot.IotTrainer(partition=0, num_partitions=4)
    start = iot.initial_arrays()
    before = trainer.evaluate(start, {}).loss
    fitted = trainer.fit(start, {"local_epochs": "3"})
    assert fitted.metrics["loss"] < before / 2
    assert {k: v.shape for k, v in fitted.arrays.items()} == {k: v.shape for k, v in start.items()}
    assert sum(v.size for v in fitted.arrays.values()) == iot.NUM_PARAMETERS
    assert np.array_equal(start["w1"], iot.initial_arrays()["w1"])  # the input is not changed


def test_a_model_of_the_wrong_shape_is_a_config_error() -> None:
    trainer = iot.IotTrainer(partition=0, num_partitions=4)
    bad = {**iot.initial_arrays(), "w2": np.zeros((3, 3), dtype=np.float32)}
    with pytest.raises(ConfigError):
        trainer.fit(bad, {})


def test_draws_are_reproducible_and_distributed_as_named() -> None:
    a, b = iot.Draws(7, 1, 4), iot.Draws(7, 1, 4)
    assert np.array_equal(a.bits(1000), b.bits(1000))
    assert not np.array_equal(iot.Draws(7, 1, 4).bits(8), iot.Draws(7, 2, 4).bits(8))
    assert not np.array_equal(a.bits(8), a.bits(8))  # the stream moves on
    u = iot.Draws(1).uniform(100_000)
    assert u.min() > 0 and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
    z = iot.Draws(2).normal((200, 500))
    assert z.shape == (200, 500)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(np.abs(z) < 1.96) - 0.95) < 0.005
    p = np.array([0.1, 0.6, 0.3])
    counts = np.bincount(iot.Draws(3).choice(3, 60_000, p), minlength=3) / 60_000
    assert np.allclose(counts, p, atol=0.01)
    order = iot.Draws(4).permutation(257)
    assert sorted(order.tolist()) == list(range(257)) and order.tolist() != list(range(257))


def test_the_example_does_not_load_numpy_random() -> None:
    code = (
        "import sys; from fedtee.client.examples import iot; "
        "t = iot.IotTrainer(partition=0, num_partitions=2); t.fit(iot.initial_arrays(), {}); "
        "print('numpy.random' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
