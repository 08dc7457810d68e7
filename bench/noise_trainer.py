"""The framework-overhead workload's "training", for fedtee clients in the benchmarks.

Every client returns the parameters it received plus small deterministic noise (the same
noise every round, seeded by the client's partition), so a round measures the framework:
transport, hashing, signing, storage and aggregation, not learning. bench/flower_app does
the same on Flower. Imported by ``fedtee client start`` with ``bench/`` on PYTHONPATH; its
file is what the sim TEE's code measurement covers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee.client.trainer import EvalResult, FitResult

NOISE = 1e-3


def initial_arrays(seed: int = 0, params: int = 1000) -> dict[str, NDArray[Any]]:
    """A model of ``params`` float32 parameters in one tensor named ``w``."""
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(params, dtype=np.float32)}


class NoiseTrainer:
    def __init__(self, *, partition: int, num_partitions: int, seed: int) -> None:
        self._seed = partition

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        out = {}
        for name, a in arrays.items():
            # One new buffer per tensor (the result), as in bench/flower_app's ClientApp.
            new = np.random.default_rng(self._seed).random(a.shape, dtype=np.float32)
            new -= np.float32(0.5)
            new *= np.float32(NOISE)
            new += a
            out[name] = new.astype(a.dtype, copy=False)
        return FitResult(arrays=out, num_examples=1)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=1)
