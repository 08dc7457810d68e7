"""The demo's model: softmax regression on scikit-learn's handwritten digits, numpy only.

The data set (1797 8x8 images, 10 classes) ships inside scikit-learn, so the demo needs no
download. A fixed 25 % is held out as the global test set; the rest is split across clients
with Dirichlet label skew (alpha 0.5 by default), the usual way to make a federation non-IID:
each client sees a few digits often and others rarely or never.

Training is plain mini-batch SGD on the cross-entropy of a linear softmax model with a small
L2 penalty. Parameters travel as two float32 tensors, ``"weights"`` (64 x 10) and ``"bias"``
(10). Round hyper-parameters (all optional, strings as on the wire): ``lr``, ``local_epochs``,
``batch_size``, ``l2``.

This file's bytes are what an honest demo client's code measurement covers; the policy that
``fedtee init`` writes lists that measurement.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from fedtee.client.trainer import (
    Arrays,
    EvalResult,
    FitResult,
    config_float,
    config_int,
)
from fedtee.errors import ConfigError

NUM_FEATURES = 64
NUM_SAMPLES = 1797
MAX_DATA_BYTES = 1 << 20  # the gzipped CSV is ~57 KiB
NUM_CLASSES = 10
TEST_FRACTION = 0.25
DATA_SEED = 20240601  # fixes the train/test split for everyone, independent of client seeds
DEFAULT_ALPHA = 0.5
MAX_PARTITIONS = 1000

DEFAULTS: dict[str, str] = {"lr": "0.5", "local_epochs": "5", "batch_size": "32", "l2": "1e-4"}


@dataclass(frozen=True, kw_only=True)
class Dataset:
    features: NDArray[np.float32]  # (n, 64), pixel intensities scaled to [0, 1]
    labels: NDArray[np.int64]  # (n,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _digits_file() -> Path:
    """scikit-learn's own copy of the data (``sklearn/datasets/data/digits.csv.gz``: 1797
    rows of 64 pixel values and the label), found without importing scikit-learn, whose
    import costs seconds per client process."""
    spec = importlib.util.find_spec("sklearn")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    raise ConfigError("the digits example needs scikit-learn: pip install 'fedtee[demo]'")


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Dataset, Dataset]:
    path = _digits_file()
    if path.stat().st_size > MAX_DATA_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_DATA_BYTES} bytes; not the digits data")
    with gzip.open(path, "rt", encoding="ascii") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float64)
    if table.shape != (NUM_SAMPLES, NUM_FEATURES + 1):
        raise ConfigError(f"{path} has shape {table.shape}; expected ({NUM_SAMPLES}, 65)")
    features = (table[:, :NUM_FEATURES] / 16.0).astype(np.float32)
    labels = table[:, NUM_FEATURES].astype(np.int64)
    order = np.random.default_rng(DATA_SEED).permutation(labels.shape[0])
    n_test = round(labels.shape[0] * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return (
        Dataset(features=features[train], labels=labels[train]),
        Dataset(features=features[test], labels=labels[test]),
    )


def train_set() -> Dataset:
    return _load()[0]


def test_set() -> Dataset:
    return _load()[1]


def dirichlet_partition(
    labels: NDArray[np.int64], *, num_partitions: int, seed: int, alpha: float = DEFAULT_ALPHA
) -> list[NDArray[np.int64]]:
    """Split example indices by label skew: class c's examples go to partitions in
    proportions drawn from Dirichlet(alpha). Deterministic for a seed; every partition gets at
    least one example (an empty client would train on nothing and still claim a round)."""
    if not 1 <= num_partitions <= min(MAX_PARTITIONS, labels.shape[0]):
        raise ConfigError(f"num_partitions must be 1..{MAX_PARTITIONS}, got {num_partitions}")
    if not alpha > 0:
        raise ConfigError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(num_partitions)]
    for cls in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        share = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(share)[:-1] * idx.shape[0]).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(int(i) for i in chunk)
    # Give an empty partition one example from the largest, so nobody is left with none.
    for k in range(num_partitions):
        if not parts[k]:
            donor = max(range(num_partitions), key=lambda j: len(parts[j]))
            parts[k].append(parts[donor].pop())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def initial_arrays(seed: int = 0) -> Arrays:
    """The global model of round 0: small random weights, zero bias."""
    rng = np.random.default_rng(seed)
    return {
        "bias": np.zeros(NUM_CLASSES, dtype=np.float32),
        "weights": (rng.standard_normal((NUM_FEATURES, NUM_CLASSES)) * 0.01).astype(np.float32),
    }


def _params(arrays: Arrays) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    try:
        weights = np.asarray(arrays["weights"], dtype=np.float64)
        bias = np.asarray(arrays["bias"], dtype=np.float64)
    except KeyError as exc:
        raise ConfigError(f"digits model needs 'weights' and 'bias'; missing {exc}") from exc
    if weights.shape != (NUM_FEATURES, NUM_CLASSES) or bias.shape != (NUM_CLASSES,):
        raise ConfigError(
            f"digits model shapes are weights {weights.shape}, bias {bias.shape}; expected "
            f"({NUM_FEATURES}, {NUM_CLASSES}) and ({NUM_CLASSES},)"
        )
    return weights.copy(), bias.copy()


def _softmax(logits: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return out


def loss_and_accuracy(arrays: Arrays, data: Dataset) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``arrays`` on ``data``."""
    weights, bias = _params(arrays)
    probs = _softmax(data.features.astype(np.float64) @ weights + bias)
    n = len(data)
    picked = probs[np.arange(n), data.labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-12, 1.0))))
    accuracy = float(np.mean(probs.argmax(axis=1) == data.labels))
    return loss, accuracy


def sgd(
    arrays: Arrays,
    data: Dataset,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    l2: float,
    rng: np.random.Generator,
) -> Arrays:
    """Mini-batch SGD on softmax cross-entropy + (l2 / 2) * ||W||^2."""
    weights, bias = _params(arrays)
    features = data.features.astype(np.float64)
    onehot = np.eye(NUM_CLASSES)[data.labels]
    n = len(data)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            x, y = features[batch], onehot[batch]
            grad_logits = (_softmax(x @ weights + bias) - y) / batch.shape[0]
            weights -= lr * (x.T @ grad_logits + l2 * weights)
            bias -= lr * grad_logits.sum(axis=0)
    return {"bias": bias.astype(np.float32), "weights": weights.astype(np.float32)}


class DigitsTrainer:
    """One client's share of the digits training set (a :class:`~fedtee.client.trainer.Trainer`).

    ``evaluate`` uses the local share by default, or the global test set with
    ``config["split"] == "test"`` (what the demo's accuracy display shows).
    """

    def __init__(self, *, partition: int, num_partitions: int, seed: int = 0) -> None:
        if not 0 <= partition < num_partitions:
            raise ConfigError(f"partition must be 0..{num_partitions - 1}, got {partition}")
        train = train_set()
        idx = dirichlet_partition(train.labels, num_partitions=num_partitions, seed=seed)[partition]
        self.data = Dataset(features=train.features[idx], labels=train.labels[idx])
        self.partition = partition
        # Per-client stream, so two clients never shuffle identically.
        self._rng = np.random.default_rng([seed, partition])

    def fit(self, arrays: Arrays, config: dict[str, str]) -> FitResult:
        merged = {**DEFAULTS, **config}
        updated = sgd(
            arrays,
            self.data,
            lr=config_float(merged, "lr", 0.5),
            epochs=config_int(merged, "local_epochs", 5, low=1, high=100),
            batch_size=config_int(merged, "batch_size", 32, low=1, high=4096),
            l2=config_float(merged, "l2", 1e-4),
            rng=self._rng,
        )
        loss, accuracy = loss_and_accuracy(updated, self.data)
        return FitResult(
            arrays=updated,
            num_examples=len(self.data),
            metrics={"train_loss": loss, "train_accuracy": accuracy},
        )

    def evaluate(self, arrays: Arrays, config: dict[str, str]) -> EvalResult:
        data = test_set() if config.get("split") == "test" else self.data
        loss, accuracy = loss_and_accuracy(arrays, data)
        return EvalResult(loss=loss, num_examples=len(data), metrics={"accuracy": accuracy})


def global_accuracy(arrays: Arrays) -> float:
    """Accuracy of a global model on the held-out test set."""
    return loss_and_accuracy(arrays, test_set())[1]


def label_histogram(data: Dataset) -> dict[int, int]:
    values, counts = np.unique(data.labels, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts, strict=True)}


__all__ = [
    "DEFAULTS",
    "Dataset",
    "DigitsTrainer",
    "dirichlet_partition",
    "global_accuracy",
    "initial_arrays",
    "label_histogram",
    "loss_and_accuracy",
    "sgd",
    "test_set",
    "train_set",
]
