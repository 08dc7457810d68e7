"""The framework-overhead workload's "training", for fedtee clients in the benchmarks.

Every client returns the parameters it received plus small deterministic noise (the same
noise every round, seeded by the client's partition), so a round measures the framework:
transport, hashing, signing, storage and aggregation, not learning. bench/flower_app does
the same on Flower. Imported by ``fedtee client start`` with ``bench/`` on PYTHONPATH; its
file is what the sim TEE's code measurement covers.

The noise is one BLOCK-element pattern per client, drawn once from a generator seeded by its
partition and added to the parameters where they lie, block after block, so "training"
makes no model-sized temporary and costs one addition per parameter. (Earlier runs drew
fresh noise for every block, every round: about 58 ms per client per round at P =
10,000,000 on this machine, 8 times the addition itself; that is the workload's cost, not
a framework's, and both sides paid it.) fedtee's runtime hands an in-place trainer
(``fit_in_place``) the downloaded model's own memory; ``fit`` copies first.
bench/flower_app's ClientApp adds the same pattern, the same way, to the arrays Flower hands
it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee.client.examples.iot import Draws
from fedtee.client.trainer import EvalResult, FitResult, copy_arrays

NOISE = 1e-3
BLOCK = 1 << 16  # noise elements made at a time (256 KiB of float32: stays in cache)


def initial_arrays(seed: int = 0, params: int = 1000) -> dict[str, NDArray[Any]]:
    """A model of ``params`` float32 parameters in one tensor named ``w``."""
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal(params, dtype=np.float32)}


def noise_pattern(seed: int) -> NDArray[np.float32]:
    """BLOCK values of ``(U(0, 1] - 0.5) * NOISE`` from SplitMix64 seeded with ``seed``
    (fedtee.client.examples.iot.Draws), not numpy.random: importing numpy.random costs a
    process about 7 MiB of resident memory (27.4 -> 34.3 MiB over numpy alone here), a cost
    of the workload that both sides' clients paid; bench/flower_app draws the same values."""
    pattern = Draws(seed).uniform(BLOCK).astype(np.float32)
    pattern -= np.float32(0.5)
    pattern *= np.float32(NOISE)
    return pattern


def add_noise(array: NDArray[Any], pattern: NDArray[np.float32]) -> None:
    """``array += pattern`` in place, the pattern repeated over the flattened array."""
    if not array.flags.c_contiguous:  # reshape would copy, and the noise would be lost
        raise ValueError("add_noise needs a C-contiguous array")
    flat = array.reshape(-1)
    for start in range(0, flat.size, pattern.size):
        part = flat[start : start + pattern.size]
        np.add(part, pattern[: part.size], out=part, casting="unsafe")


class NoiseTrainer:
    def __init__(self, *, partition: int, num_partitions: int, seed: int) -> None:
        self._pattern = noise_pattern(partition)

    def fit_in_place(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        for array in arrays.values():
            add_noise(array, self._pattern)  # the same noise for every tensor and round
        return FitResult(arrays=arrays, num_examples=1)

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        return self.fit_in_place(copy_arrays(arrays), config)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=1)
