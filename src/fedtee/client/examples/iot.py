"""A tiny IoT trainer: a 100,060-parameter MLP on sensor-like data it generates, numpy only.

What an IoT-profile client runs (``fedtee client start --profile iot``): nothing but numpy,
no data set to download. Every client draws its own readings from one fixed generator: ten
kinds of event, each a noisy pattern over 64 sensor channels (class centres fixed by
``DATA_SEED``, shared by every client); a client's ``partition`` skews which events it sees
(non-IID) and its readings are its own draw. Model: 64 -> 1334 (ReLU) -> 10 softmax, float32,
as four tensors ``w1`` (64 x 1334), ``b1``, ``w2`` (1334 x 10), ``b2``: 100,060 parameters
(400 KB as float32). Training is mini-batch SGD in float32 so that one round's working set
stays a few model sizes. Round hyper-parameters (strings, optional): ``lr``, ``local_epochs``,
``batch_size``.

This file's bytes are what an IoT example client's code measurement covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from fedtee.client.trainer import Arrays, EvalResult, FitResult, config_float, config_int
from fedtee.errors import ConfigError

NUM_FEATURES = 64
HIDDEN = 1334
NUM_CLASSES = 10
NUM_PARAMETERS = NUM_FEATURES * HIDDEN + HIDDEN + HIDDEN * NUM_CLASSES + NUM_CLASSES
SAMPLES_PER_CLIENT = 256
DATA_SEED = 20260101
NOISE = 2.5
MAX_PARTITIONS = 100_000
SCORE_BATCH = 32  # readings per forward pass when scoring
DEFAULTS: dict[str, str] = {"lr": "0.05", "local_epochs": "1", "batch_size": "32"}
_SHAPES = {
    "w1": (NUM_FEATURES, HIDDEN),
    "b1": (HIDDEN,),
    "w2": (HIDDEN, NUM_CLASSES),
    "b2": (NUM_CLASSES,),
}


@dataclass(frozen=True, kw_only=True)
class Readings:
    features: NDArray[np.float32]  # (n, 64)
    labels: NDArray[np.int64]  # (n,)


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * _M1) & _MASK
    z = ((z ^ (z >> 27)) * _M2) & _MASK
    return z ^ (z >> 31)


class Draws:
    """A reproducible stream of random numbers from the integers in ``key``: SplitMix64
    (Steele, Lea and Flood, OOPSLA 2014) over a counter, in numpy integer arithmetic.

    The example needs a few tens of thousands of draws, not numpy.random, whose extension
    modules alone cost a device about 2.5 MiB of resident memory (docs/iot.md)."""

    def __init__(self, *key: int) -> None:
        state = 0
        for k in key:
            state = _mix64((state + _GOLDEN + (k & _MASK)) & _MASK)
        self._state = state
        self._drawn = 0

    def bits(self, n: int) -> NDArray[np.uint64]:
        """``n`` uniformly distributed 64-bit words (uint64 arithmetic wraps, as it must)."""
        counter = np.arange(self._drawn + 1, self._drawn + n + 1, dtype=np.uint64)
        self._drawn += n
        z = counter * np.uint64(_GOLDEN) + np.uint64(self._state)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        out: NDArray[np.uint64] = z ^ (z >> np.uint64(31))
        return out

    def uniform(self, n: int) -> NDArray[np.float64]:
        """``n`` draws from (0, 1]: the top 53 bits of each word."""
        top = (self.bits(n) >> np.uint64(11)) + np.uint64(1)
        return top.astype(np.float64) * 2.0**-53

    def normal(self, shape: tuple[int, ...]) -> NDArray[np.float64]:
        """Standard normal draws (Box-Muller), as an array of ``shape``."""
        size = math.prod(shape)
        half = (size + 1) // 2
        radius = np.sqrt(-2.0 * np.log(self.uniform(half)))
        angle = 2.0 * np.pi * self.uniform(half)
        both = np.concatenate([radius * np.cos(angle), radius * np.sin(angle)])
        return both[:size].reshape(shape)

    def choice(self, k: int, n: int, p: NDArray[np.float64]) -> NDArray[np.int64]:
        """``n`` draws from ``0..k-1`` with probabilities ``p`` (inverse of the CDF)."""
        cdf = np.cumsum(p[:k])
        picked: NDArray[np.intp] = np.searchsorted(cdf, self.uniform(n) * cdf[-1], side="left")
        return np.minimum(picked, k - 1).astype(np.int64)

    def permutation(self, n: int) -> NDArray[np.int64]:
        """A random order of ``0..n-1``."""
        return np.argsort(self.bits(n), kind="stable").astype(np.int64)


def readings(*, partition: int, num_partitions: int, seed: int, n: int) -> Readings:
    """``n`` readings for one client: events skewed towards two kinds per partition."""
    centres = Draws(DATA_SEED).normal((NUM_CLASSES, NUM_FEATURES))
    draws = Draws(seed, partition, num_partitions)
    favoured = {partition % NUM_CLASSES, (partition + 1) % NUM_CLASSES}
    weights = np.array([4.0 if c in favoured else 1.0 for c in range(NUM_CLASSES)])
    labels = draws.choice(NUM_CLASSES, n, weights / weights.sum())
    noise = draws.normal((n, NUM_FEATURES)) * NOISE
    features = (centres[labels] + noise).astype(np.float32)
    return Readings(features=features, labels=labels)


def initial_arrays(seed: int = 0) -> Arrays:
    """Round 0's global model: He-initialised weights, zero biases."""
    draws = Draws(seed)
    return {
        "w1": (draws.normal(_SHAPES["w1"]) * np.sqrt(2 / NUM_FEATURES)).astype(np.float32),
        "b1": np.zeros(HIDDEN, dtype=np.float32),
        "w2": (draws.normal(_SHAPES["w2"]) * np.sqrt(2 / HIDDEN)).astype(np.float32),
        "b2": np.zeros(NUM_CLASSES, dtype=np.float32),
    }


def _params(arrays: Arrays) -> dict[str, NDArray[np.float32]]:
    out: dict[str, NDArray[np.float32]] = {}
    for name, shape in _SHAPES.items():
        if name not in arrays or tuple(arrays[name].shape) != shape:
            raise ConfigError(f"iot model needs {name} of shape {shape}")
        out[name] = np.array(arrays[name], dtype=np.float32, copy=True)
    return out


def _forward(
    p: dict[str, NDArray[np.float32]], x: NDArray[np.float32]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Hidden activations and class probabilities for the batch ``x``, computed in place
    where numpy allows (each temporary is one batch-sized array, not three)."""
    hidden: NDArray[np.float32] = x @ p["w1"]
    hidden += p["b1"]
    np.maximum(hidden, 0, out=hidden)
    probs: NDArray[np.float32] = hidden @ p["w2"]
    probs += p["b2"]
    probs -= probs.max(axis=1, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


class IotTrainer:
    """One device's readings (a :class:`~fedtee.client.trainer.Trainer`)."""

    def __init__(self, *, partition: int, num_partitions: int, seed: int = 0) -> None:
        if not 1 <= num_partitions <= MAX_PARTITIONS or not 0 <= partition < num_partitions:
            raise ConfigError(f"partition {partition} of {num_partitions} is out of range")
        self.data = readings(
            partition=partition, num_partitions=num_partitions, seed=seed, n=SAMPLES_PER_CLIENT
        )
        self._draws = Draws(seed, partition, 1)

    def fit(self, arrays: Arrays, config: dict[str, str]) -> FitResult:
        cfg = {**DEFAULTS, **config}
        lr = np.float32(config_float(cfg, "lr", 0.05))
        epochs = config_int(cfg, "local_epochs", 1, low=1, high=100)
        batch = config_int(cfg, "batch_size", 32, low=1, high=4096)
        p = _params(arrays)
        x_all, y_all = self.data.features, self.data.labels
        n = y_all.shape[0]
        for _ in range(epochs):
            order = self._draws.permutation(n)
            for start in range(0, n, batch):
                idx = order[start : start + batch]
                x = x_all[idx]
                hidden, probs = _forward(p, x)
                probs[np.arange(idx.shape[0]), y_all[idx]] -= 1
                grad = probs
                grad *= lr / np.float32(idx.shape[0])  # the step size folded in once
                grad_hidden = grad @ p["w2"].T
                grad_hidden *= hidden > 0
                p["w2"] -= hidden.T @ grad
                p["b2"] -= grad.sum(axis=0)
                p["w1"] -= x.T @ grad_hidden
                p["b1"] -= grad_hidden.sum(axis=0)
        loss, accuracy = self._score(p)
        return FitResult(
            arrays=dict(p), num_examples=n, metrics={"loss": loss, "accuracy": accuracy}
        )

    def _score(self, p: dict[str, NDArray[np.float32]]) -> tuple[float, float]:
        """Mean cross-entropy and accuracy over this device's readings, a batch at a time
        (all 256 at once would hold three 256 x 1334 activations: 4 MB, ten model sizes)."""
        features, labels = self.data.features, self.data.labels
        n = labels.shape[0]
        loss_sum = 0.0
        correct = 0
        for start in range(0, n, SCORE_BATCH):
            y = labels[start : start + SCORE_BATCH]
            _, probs = _forward(p, features[start : start + SCORE_BATCH])
            picked = probs[np.arange(y.shape[0]), y]
            loss_sum -= float(np.sum(np.log(np.clip(picked, 1e-12, 1.0)), dtype=np.float64))
            correct += int(np.count_nonzero(probs.argmax(axis=1) == y))
        return loss_sum / n, correct / n

    def evaluate(self, arrays: Arrays, config: dict[str, str]) -> EvalResult:
        loss, accuracy = self._score(_params(arrays))
        return EvalResult(
            loss=loss, num_examples=int(self.data.labels.shape[0]), metrics={"accuracy": accuracy}
        )


__all__ = ["NUM_PARAMETERS", "Draws", "IotTrainer", "initial_arrays", "readings"]
