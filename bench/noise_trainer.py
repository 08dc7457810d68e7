"""The framework-overhead workload's "training", for fedtee clients in the benchmarks.

Every client returns the parameters it received plus small deterministic noise (the same
noise every round, seeded by the client's partition), so a round measures the framework:
transport, hashing, signing, storage and aggregation, not learning. bench/flower_app does
the same on Flower. Imported by ``fedtee client start`` with ``bench/`` on PYTHONPATH; its
file is what the sim TEE's code measurement covers.

The noise is made BLOCK elements at a time into one small scratch array and added to the
parameters where they lie, so "training" makes no model-sized temporary. fedtee's runtime
hands an in-place trainer (``fit_in_place``) the downloaded model's own memory; ``fit``
copies first. bench/flower_app's ClientApp adds the same noise, the same way, to the arrays
Flower hands it. The values are bit-identical to generating the whole noise array at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee.client.trainer import EvalResult, FitResult, copy_arrays

NOISE = 1e-3
BLOCK = 1 << 16  # noise elements made at a time (256 KiB of float32: stays in cache)


def initial_arrays(seed: int = 0, params: int = 1000) -> dict[str, NDArray[Any]]:
    """A model of ``params`` float32 parameters in one tensor named ``w``."""
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(params, dtype=np.float32)}


def add_noise(array: NDArray[Any], seed: int, scratch: NDArray[np.float32]) -> None:
    """``array += (U[0, 1) - 0.5) * NOISE`` in place, the noise from a generator seeded with
    ``seed``, drawn ``len(scratch)`` elements at a time into ``scratch``."""
    if not array.flags.c_contiguous:  # reshape would copy, and the noise would be lost
        raise ValueError("add_noise needs a C-contiguous array")
    rng = np.random.default_rng(seed)
    flat = array.reshape(-1)
    for start in range(0, flat.size, scratch.size):
        part = flat[start : start + scratch.size]
        noise = scratch[: part.size]
        rng.random(dtype=np.float32, out=noise)
        noise -= np.float32(0.5)
        noise *= np.float32(NOISE)
        np.add(part, noise, out=part, casting="unsafe")


class NoiseTrainer:
    def __init__(self, *, partition: int, num_partitions: int, seed: int) -> None:
        self._seed = partition

    def fit_in_place(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        scratch = np.empty(BLOCK, dtype=np.float32)
        for array in arrays.values():
            add_noise(array, self._seed, scratch)  # the same noise for every tensor and round
        return FitResult(arrays=arrays, num_examples=1)

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        return self.fit_in_place(copy_arrays(arrays), config)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=1)
