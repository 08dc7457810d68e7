"""The Flower comparison adds the same noise on both sides (docs/benchmarks.md says so).

bench/flower_app runs in Flower's own virtual environment, without fedtee, so it carries
its own few lines of SplitMix64; bench/noise_trainer.py uses fedtee.client.examples.iot.Draws.
This test keeps the two from drifting apart: it takes ``_uniform`` out of the app's source
(the module itself imports flwr, which is not installed here) and compares its draws.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtee.client.examples.iot import Draws

APP = Path(__file__).resolve().parents[2] / "bench/flower_app/flower_bench/client_app.py"


def _flower_uniform() -> Any:
    tree = ast.parse(APP.read_text())
    [fn] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_uniform"]
    namespace: dict[str, Any] = {"np": np}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(APP), "exec"), namespace)
    return namespace["_uniform"]


@pytest.mark.parametrize("seed", [0, 1, 29, 2**40 + 7])
def test_the_flower_app_draws_what_fedtees_noise_trainer_draws(seed: int) -> None:
    ours = Draws(seed).uniform(4096)
    theirs = _flower_uniform()(seed, 4096)
    np.testing.assert_array_equal(theirs, ours)
    assert ours.min() > 0.0 and ours.max() <= 1.0
    assert not np.array_equal(ours, Draws(seed + 1).uniform(4096))  # the seed matters
