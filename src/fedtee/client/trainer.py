"""The Trainer API: what a federation's training code implements, numpy only.

A trainer never sees the network, keys or evidence. The runtime hands it the round's global
model as named numpy arrays plus the round's string config (hyper-parameters the server chose)
and gets back new arrays, how many examples they were trained on, and metrics. The runtime
encodes, digests, signs and uploads; a trainer cannot forge a receipt and does not need to.

The module file that defines a trainer is what the client's code measurement covers (see
:func:`fedtee.client.runtime.measure_trainer`), so changing one byte of it changes the
measurement that the server's policy compares with its reference values.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedtee.errors import ConfigError

Arrays = dict[str, NDArray[Any]]


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"metric name {name!r} must be a non-empty string")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r} is not finite: {value!r}")
        out[name] = number
    return out


@dataclass(frozen=True, kw_only=True)
class FitResult:
    """New model arrays after local training on ``num_examples`` examples."""

    arrays: Arrays
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.num_examples, bool) or self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples!r}")
        object.__setattr__(self, "metrics", _check_metrics(self.metrics))


@dataclass(frozen=True, kw_only=True)
class EvalResult:
    """Loss (and metrics such as accuracy) of some arrays on ``num_examples`` examples."""

    loss: float
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.num_examples, bool) or self.num_examples < 0:
            raise ValueError(f"num_examples must be >= 0, got {self.num_examples!r}")
        if not math.isfinite(self.loss):
            raise ValueError(f"loss is not finite: {self.loss!r}")
        object.__setattr__(self, "metrics", _check_metrics(self.metrics))


@runtime_checkable
class Trainer(Protocol):
    """Local training and evaluation on named numpy arrays.

    ``config`` carries the round's hyper-parameters as strings (the wire's
    ``map<string, string>``); a trainer parses what it knows and ignores the rest.
    Implementations must not mutate ``arrays``.
    """

    def fit(self, arrays: Arrays, config: dict[str, str]) -> FitResult: ...

    def evaluate(self, arrays: Arrays, config: dict[str, str]) -> EvalResult: ...


@runtime_checkable
class InPlaceTrainer(Trainer, Protocol):
    """A trainer that can also train the received model's own memory.

    ``fit_in_place`` gets *writable* views of the round's global model (the buffer it was
    downloaded into, after its digest was checked) and may overwrite them; the arrays it
    returns (usually those same views) are the update. The runtime calls it instead of
    :meth:`Trainer.fit` when it no longer needs the global model after training (plain
    safetensors updates; a compressed update is a delta against the global model, so it uses
    ``fit``), and a round then holds one model-sized buffer instead of two. The views are
    valid for this round only: a trainer copies what it wants to keep. ``fit`` must still
    work, leaving its arguments untouched.
    """

    def fit_in_place(self, arrays: Arrays, config: dict[str, str]) -> FitResult: ...


@dataclass(frozen=True, kw_only=True)
class TrainerSpec:
    """Where a trainer lives: ``"package.module:Factory"``.

    ``Factory(partition=..., num_partitions=..., seed=...)`` returns a :class:`Trainer`.
    Only modules already installed in the client's environment are imported, from the
    client's own config file: nothing a peer sends is ever imported.
    """

    target: str

    def __post_init__(self) -> None:
        module, sep, attr = self.target.partition(":")
        if (
            not sep
            or not module
            or not attr
            or not all(part.isidentifier() for part in (*module.split("."), attr))
        ):
            raise ConfigError(
                f"trainer must look like 'package.module:Factory', got {self.target!r}"
            )

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    @property
    def attribute(self) -> str:
        return self.target.partition(":")[2]

    def module_file(self) -> Path:
        """The source file of the trainer's module (what the code measurement covers)."""
        module = self._import()
        path = getattr(module, "__file__", None)
        if path is None:
            raise ConfigError(f"trainer module {self.module!r} has no source file to measure")
        return Path(path).resolve()

    def build(self, *, partition: int, num_partitions: int, seed: int) -> Trainer:
        factory = getattr(self._import(), self.attribute, None)
        if factory is None or not callable(factory):
            raise ConfigError(f"{self.module!r} has no callable {self.attribute!r}")
        try:
            trainer = factory(partition=partition, num_partitions=num_partitions, seed=seed)
        except TypeError as exc:
            raise ConfigError(
                f"{self.target} does not take (partition, num_partitions, seed)"
            ) from exc
        if not isinstance(trainer, Trainer):
            raise ConfigError(f"{self.target} did not return a Trainer (fit + evaluate)")
        return trainer

    def _import(self) -> Any:
        try:
            return importlib.import_module(self.module)
        except ImportError as exc:
            raise ConfigError(f"cannot import trainer module {self.module!r}: {exc}") from exc


def config_float(config: Mapping[str, str], name: str, default: float) -> float:
    """Read a float hyper-parameter; a malformed value is a config error, not a crash."""
    raw = config.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"round config {name}={raw!r} is not a number") from exc
    if not math.isfinite(value):
        raise ConfigError(f"round config {name}={raw!r} is not finite")
    return value


def config_int(config: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """Read a bounded integer hyper-parameter."""
    raw = config.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"round config {name}={raw!r} is not an integer") from exc
    if not low <= value <= high:
        raise ConfigError(f"round config {name}={value} is outside {low}..{high}")
    return value


def copy_arrays(arrays: Mapping[str, NDArray[Any]]) -> Arrays:
    return {name: np.array(value, copy=True) for name, value in arrays.items()}


__all__ = [
    "Arrays",
    "EvalResult",
    "FitResult",
    "InPlaceTrainer",
    "Trainer",
    "TrainerSpec",
    "config_float",
    "config_int",
    "copy_arrays",
]
