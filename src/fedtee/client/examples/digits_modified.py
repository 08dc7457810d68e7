"""A tampered copy of the digits trainer, used by the demo's second cheating client.

It poisons training (swaps the labels 1 and 7 before fitting) while keeping the same model
shape, so its updates would look plausible to a server that only checks shapes. Its source
file differs from :mod:`fedtee.client.examples.digits`, so the client's code measurement
differs and a policy listing only the honest trainer's measurement rejects it at enrolment
(``measurement_not_allowed``), before it can send a single update.
"""

from __future__ import annotations

import numpy as np

from fedtee.client.examples.digits import Dataset, DigitsTrainer
from fedtee.client.trainer import Arrays, FitResult

_SWAP = {1: 7, 7: 1}


class ModifiedDigitsTrainer(DigitsTrainer):
    """Same interface as :class:`DigitsTrainer`; trains on deliberately wrong labels."""

    def __init__(self, *, partition: int, num_partitions: int, seed: int = 0) -> None:
        super().__init__(partition=partition, num_partitions=num_partitions, seed=seed)
        labels = self.data.labels.copy()
        for src, dst in _SWAP.items():
            labels[self.data.labels == src] = dst
        self.data = Dataset(features=self.data.features, labels=labels.astype(np.int64))

    def fit(self, arrays: Arrays, config: dict[str, str]) -> FitResult:
        return super().fit(arrays, config)


__all__ = ["ModifiedDigitsTrainer"]
