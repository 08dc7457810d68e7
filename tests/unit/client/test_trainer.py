from __future__ import annotations

import numpy as np
import pytest

from fedtee.client.trainer import (
    EvalResult,
    FitResult,
    Trainer,
    TrainerSpec,
    config_float,
    config_int,
)
from fedtee.errors import ConfigError


def test_fit_result_rejects_negative_examples_and_nonfinite_metrics() -> None:
    with pytest.raises(ValueError):
        FitResult(arrays={}, num_examples=-1)
    with pytest.raises(ValueError):
        FitResult(arrays={}, num_examples=1, metrics={"loss": float("nan")})
    ok = FitResult(arrays={}, num_examples=3, metrics={"acc": 1})
    assert ok.metrics == {"acc": 1.0}


def test_eval_result_rejects_nonfinite_loss() -> None:
    with pytest.raises(ValueError):
        EvalResult(loss=float("inf"), num_examples=1)
    assert EvalResult(loss=0.5, num_examples=2).loss == 0.5


@pytest.mark.parametrize(
    "target", ["nocolon", ":Factory", "pkg.mod:", "pkg.mod:Fac tory", "pkg..mod:F", "1pkg:F"]
)
def test_trainer_spec_rejects_malformed_targets(target: str) -> None:
    with pytest.raises(ConfigError):
        TrainerSpec(target=target)


def test_trainer_spec_builds_the_digits_trainer_and_names_its_file() -> None:
    spec = TrainerSpec(target="fedtee.client.examples.digits:DigitsTrainer")
    trainer = spec.build(partition=0, num_partitions=2, seed=0)
    assert isinstance(trainer, Trainer)
    assert spec.module_file().name == "digits.py"


def test_trainer_spec_missing_module_or_attribute_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        TrainerSpec(target="fedtee.client.examples.nope:X").build(
            partition=0, num_partitions=1, seed=0
        )
    with pytest.raises(ConfigError):
        TrainerSpec(target="fedtee.client.examples.digits:Nope").build(
            partition=0, num_partitions=1, seed=0
        )
    with pytest.raises(ConfigError):  # callable, but not a Trainer
        TrainerSpec(target="fedtee.client.examples.digits:initial_arrays").build(
            partition=0, num_partitions=1, seed=0
        )


def test_config_parsers_bound_and_type_check() -> None:
    assert config_float({"lr": "0.25"}, "lr", 1.0) == 0.25
    assert config_float({}, "lr", 1.0) == 1.0
    assert config_int({"e": "3"}, "e", 1, low=1, high=5) == 3
    for bad in ({"lr": "x"}, {"lr": "nan"}):
        with pytest.raises(ConfigError):
            config_float(bad, "lr", 1.0)
    for bad_int in ({"e": "9"}, {"e": "2.5"}):
        with pytest.raises(ConfigError):
            config_int(bad_int, "e", 1, low=1, high=5)
    assert np.isfinite(config_float({"x": "1e-4"}, "x", 0.0))


def test_package_exports_exactly_its_public_names() -> None:
    import fedtee.client as client

    classes = {n for n in dir(client) if n[0].isupper()}
    assert set(client.__all__) == classes | {"measure_trainer"}
    assert all(hasattr(client, name) for name in client.__all__)
    assert "TamperingTransport" not in classes  # cheats are never part of the API
