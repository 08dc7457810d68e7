"""Aggregation strategies: the small interface the round loop drives, and streaming FedAvg.

The round loop (elsewhere) calls, per round::

    selected = strategy.configure_round(round, available_clients)
    strategy.begin(global_spec)
    for each accepted update, as it arrives:  strategy.accumulate(arrays, num_examples)
    new_global = strategy.finalize()

Updates are folded in one at a time, so a strategy holds one model-sized accumulator however
many clients take part; a server never keeps clients x model bytes in memory. Strategies see
only checked numpy arrays and example counts: they never import fedtee.attest, and trust
decisions are made before an update reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedtee.errors import Reason, UpdateRejected
from fedtee.tensors import Arrays, ModelSpec, check_update


@runtime_checkable
class Strategy(Protocol):
    """What the round loop needs from an aggregation rule."""

    name: str

    def configure_round(self, round: int, clients: Sequence[str]) -> list[str]:
        """Pick the clients asked to train in ``round`` from those available."""
        ...

    def begin(self, global_spec: ModelSpec) -> None:
        """Start a round whose updates must all match ``global_spec``."""
        ...

    def accumulate(self, update: Mapping[str, NDArray[Any]], num_examples: int) -> None:
        """Fold one accepted update in; called once per update, in arrival order."""
        ...

    def finalize(self) -> Arrays:
        """The new global model. Raises ValueError if nothing was accumulated."""
        ...


class FedAvg:
    """Weighted federated averaging (McMahan et al. 2017), streaming.

    ``new = sum(n_i * w_i) / sum(n_i)`` with a float64 accumulator per tensor, cast back to
    the model's dtype at the end (rounded for integer tensors).

    Selection: if ``clients_per_round`` is set, clients are sorted and a window of that size
    rotates with the round number, so every client gets turns and selection is reproducible.
    """

    name = "fedavg"

    def __init__(self, *, clients_per_round: int | None = None) -> None:
        if clients_per_round is not None and clients_per_round < 1:
            raise ValueError("clients_per_round must be at least 1")
        self._clients_per_round = clients_per_round
        self._spec: ModelSpec | None = None
        self._acc: dict[str, NDArray[np.float64]] = {}
        self._total = 0
        self._count = 0

    def configure_round(self, round: int, clients: Sequence[str]) -> list[str]:
        ordered = sorted(set(clients))
        k = self._clients_per_round
        if k is None or k >= len(ordered):
            return ordered
        start = (round * k) % len(ordered)
        window = ordered[start:] + ordered[:start]
        return sorted(window[:k])

    def begin(self, global_spec: ModelSpec) -> None:
        self._spec = global_spec
        self._acc = {
            name: np.zeros(t.shape, dtype=np.float64) for name, t in global_spec.tensors.items()
        }
        self._total = 0
        self._count = 0

    @property
    def num_updates(self) -> int:
        return self._count

    @property
    def total_examples(self) -> int:
        return self._total

    def accumulate(self, update: Mapping[str, NDArray[Any]], num_examples: int) -> None:
        if self._spec is None:
            raise RuntimeError("begin() must be called before accumulate()")
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise UpdateRejected(
                f"num_examples must be a positive integer, got {num_examples!r}",
                reason=Reason.UPDATE_MALFORMED,
            )
        check_update(update, spec=self._spec)
        weight = float(num_examples)
        for name, acc in self._acc.items():
            # In place, one tensor at a time: the only temporary is one tensor's float64 copy.
            acc += np.asarray(update[name], dtype=np.float64) * weight
        self._total += num_examples
        self._count += 1

    def finalize(self) -> Arrays:
        if self._spec is None or self._total == 0:
            raise ValueError("no updates were accumulated this round")
        out: Arrays = {}
        for name, acc in self._acc.items():
            mean = acc / float(self._total)
            dtype = np.dtype(self._spec.tensors[name].dtype_numpy)
            out[name] = np.rint(mean).astype(dtype) if dtype.kind in "iu" else mean.astype(dtype)
        self._acc = {}
        self._spec = None
        return out


__all__ = ["FedAvg", "Strategy"]
