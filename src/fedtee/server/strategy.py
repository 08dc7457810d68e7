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
from fedtee.tensors import FINITE_BLOCK, Arrays, ModelSpec, all_finite, check_update


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


# Elements per block when folding an update in: a block of the update, its weighted copy and
# the accumulator's block stay in the CPU cache, so each update is read from memory once for
# the finiteness check and once to accumulate, with no model-sized temporaries.
BLOCK = 1 << 16
ACCUMULATORS = ("float64", "float32")


def _blocks(size: int) -> range:
    return range(0, size, BLOCK)


class FedAvg:
    """Weighted federated averaging (McMahan et al. 2017), streaming.

    ``new = sum(n_i * w_i) / sum(n_i)`` with one accumulator per tensor, cast back to the
    model's dtype at the end (rounded for integer tensors). The accumulator is float64 by
    default; ``accumulator="float32"`` halves its memory and traffic for float32/float16
    tensors (integer and float64 tensors keep float64) at the cost of float32 rounding in the
    running sum (relative error about ``n_updates * 6e-8`` in the worst case).

    Each update is checked whole (shape, dtype, finiteness) before any of it is added, so a
    rejected update leaves the accumulator untouched; then it is folded in block by block.

    Selection: if ``clients_per_round`` is set, clients are sorted and a window of that size
    rotates with the round number, so every client gets turns and selection is reproducible.
    """

    name = "fedavg"

    def __init__(
        self, *, clients_per_round: int | None = None, accumulator: str = "float64"
    ) -> None:
        if clients_per_round is not None and clients_per_round < 1:
            raise ValueError("clients_per_round must be at least 1")
        if accumulator not in ACCUMULATORS:
            raise ValueError(f"accumulator must be one of {ACCUMULATORS}, got {accumulator!r}")
        self._clients_per_round = clients_per_round
        self._narrow = accumulator == "float32"
        self._spec: ModelSpec | None = None
        self._acc: dict[str, NDArray[Any]] = {}
        self._scratch: dict[np.dtype[Any], NDArray[Any]] = {}
        self._mask: NDArray[np.bool_] = np.empty(FINITE_BLOCK, dtype=np.bool_)
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

    def _acc_dtype(self, model_dtype: np.dtype[Any]) -> np.dtype[Any]:
        if self._narrow and model_dtype.kind == "f" and model_dtype.itemsize <= 4:
            return np.dtype(np.float32)
        return np.dtype(np.float64)

    def begin(self, global_spec: ModelSpec) -> None:
        self._spec = global_spec
        self._acc = {
            name: np.zeros(t.shape, dtype=self._acc_dtype(np.dtype(t.dtype_numpy)))
            for name, t in global_spec.tensors.items()
        }
        self._scratch = {}
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
        found = ModelSpec.of(update)
        if found.tensors != self._spec.tensors:
            check_update(update, spec=self._spec)  # raises with the precise mismatch
        for name in self._acc:
            if not all_finite(np.asarray(update[name]), scratch=self._mask):
                raise UpdateRejected(
                    f"tensor {name!r} holds NaN or infinite values",
                    reason=Reason.UPDATE_NONFINITE,
                )
        weight = float(num_examples)
        for name, acc in self._acc.items():
            flat_u = np.asarray(update[name]).reshape(-1)
            flat_a = acc.reshape(-1)
            scratch = self._scratch.get(acc.dtype)
            if scratch is None:
                scratch = self._scratch[acc.dtype] = np.empty(BLOCK, dtype=acc.dtype)
            for i in _blocks(flat_a.size):
                a = flat_a[i : i + BLOCK]
                s = scratch[: a.size]
                np.multiply(flat_u[i : i + BLOCK], weight, out=s, dtype=s.dtype)
                np.add(a, s, out=a)
        self._total += num_examples
        self._count += 1

    def finalize(self) -> Arrays:
        if self._spec is None or self._total == 0:
            raise ValueError("no updates were accumulated this round")
        out: Arrays = {}
        for name in list(self._acc):
            # Each accumulator tensor is dropped as soon as it is converted, so the peak is
            # the accumulator alone, not the accumulator plus the new model.
            acc = self._acc.pop(name)
            dtype = np.dtype(self._spec.tensors[name].dtype_numpy)
            np.divide(acc, float(self._total), out=acc)
            out[name] = (
                np.rint(acc).astype(dtype) if dtype.kind in "iu" else acc.astype(dtype, copy=False)
            )
        self._acc = {}
        self._scratch = {}
        self._spec = None
        return out


__all__ = ["FedAvg", "Strategy"]
