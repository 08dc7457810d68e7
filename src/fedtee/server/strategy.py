"""Aggregation strategies: the small interface the round loop drives, and streaming FedAvg.

The round loop (elsewhere) calls, per round::

    selected = strategy.configure_round(round, available_clients)
    strategy.begin(global_spec)
    strategy.accumulate_many([(arrays, num_examples), ...])   # if the strategy offers it
    # otherwise, for each update:                 strategy.accumulate(arrays, num_examples)
    new_global = strategy.finalize()

A strategy holds one model-sized accumulator however many clients take part; a server never
keeps clients x model bytes in memory. Strategies see only numpy arrays and example counts:
they never import fedtee.attest, and trust decisions are made before an update reaches them.

``accumulate`` (one update at a time) is all a third-party strategy needs. FedAvg also offers
``accumulate_many``, the path the round loop takes at round close: it walks the model block
by block and folds that block of every update while the accumulator's block stays in the CPU
cache, so the model-sized accumulator crosses memory once per group of updates instead of once
per update (see :meth:`FedAvg.accumulate_many`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from fedtee.errors import Reason, UpdateRejected
from fedtee.tensors import FINITE_BLOCK, Arrays, ModelSpec, TensorSpec, all_finite, check_update

Update = Mapping[str, NDArray[Any]]


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


# Fills ``out`` (a 1-D array of the tensor's dtype) with the tensor's elements from
# ``start``: how a stored update hands the fold its bytes without a memory map.
BlockReader = Callable[[int, NDArray[Any]], None]


@runtime_checkable
class BlockReadable(Protocol):
    """An update that can copy a tensor's elements straight into a buffer (``pread`` from
    its file): ``block_reader(name)`` returns a :data:`BlockReader`, or None when the tensor
    must be read from its array. ``accumulate_many`` reads such tensors block by block into
    a small per-thread buffer, so folding them maps none of their pages: a page fault on a
    file map can map megabytes at once (a 2 MiB folio), which no release window bounds."""

    def block_reader(self, name: str) -> BlockReader | None: ...


@runtime_checkable
class Releasable(Protocol):
    """An update whose tensors are views of a file map: ``release()`` drops the pages read so
    far from the process's resident set (they stay in the page cache). ``accumulate_many``
    calls it as it walks the model, so folding N mapped updates keeps a bounded number of
    their pages resident, not N models."""

    def release(self) -> None: ...


# Elements per block: a block of every update of a group (cast to the accumulator's dtype),
# their weighted sum and the accumulator's block stay in the CPU caches (GROUP x BLOCK x 8
# bytes = 2 MiB of staging for float64). Smaller blocks cost more numpy calls per byte than
# they gain in locality (measured with bench/bench_aggregate.py).
BLOCK = 1 << 14
# Updates folded together per pass over the accumulator: the accumulator (8 bytes a parameter
# for float64) is read and written once per GROUP updates instead of once per update.
GROUP = 16
# Decoded (not memory-mapped) tensors held at once by a group, e.g. of compressed updates,
# which decode into new arrays: a group closes once it holds this many bytes of them.
GROUP_DECODED_BYTES = 64 << 20
# Bytes of mapped update pages a group reads between two calls of Releasable.release(), all
# fold threads together (each thread's share is WINDOW_BYTES / threads): a fold keeps about
# this much of the updates resident, whatever N and P.
WINDOW_BYTES = 8 << 20
ACCUMULATORS = ("float64", "float32")
# accumulate_many folds a tensor of at least PARALLEL_BLOCKS blocks on several threads, each
# over its own contiguous range of whole blocks (at least PARALLEL_BLOCKS // 2 each): numpy
# releases the GIL in the cast and the BLAS product that do the work, so the fold runs on
# as many cores as it has threads. The default is one thread a core, up to MAX_FOLD_THREADS
# (past a few threads the fold is bound by memory bandwidth, not by cores).
PARALLEL_BLOCKS = 16
MAX_FOLD_THREADS = 8


def default_fold_threads() -> int:
    return max(1, min(MAX_FOLD_THREADS, os.cpu_count() or 1))


def _blocks(size: int) -> range:
    return range(0, size, BLOCK)


def _checked_count(num_examples: object) -> int:
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise UpdateRejected(
            f"num_examples must be a positive integer, got {num_examples!r}",
            reason=Reason.UPDATE_MALFORMED,
        )
    return num_examples


def _nonfinite(name: str) -> UpdateRejected:
    return UpdateRejected(
        f"tensor {name!r} holds NaN or infinite values", reason=Reason.UPDATE_NONFINITE
    )


def _tensor(update: Update, name: str, expected: TensorSpec) -> NDArray[Any]:
    """``update[name]`` (read once), checked against the model's shape and dtype."""
    array = np.asarray(update[name])
    found = ModelSpec.of({name: array}).tensors[name]
    if found != expected:
        raise UpdateRejected(
            f"tensor {name!r} is {found.dtype} {list(found.shape)}, "
            f"expected {expected.dtype} {list(expected.shape)}",
            reason=Reason.UPDATE_SHAPE_MISMATCH,
        )
    return array


class _Rejected(Exception):
    """Update ``index`` of an accumulate_many batch was rejected with ``error``."""

    def __init__(self, index: int, error: UpdateRejected) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


class FedAvg:
    """Weighted federated averaging (McMahan et al. 2017), streaming.

    ``new = sum(n_i * w_i) / sum(n_i)`` with one accumulator per tensor, cast back to the
    model's dtype at the end (rounded for integer tensors). The accumulator is float64 by
    default; ``accumulator="float32"`` halves its memory and traffic for float32/float16
    tensors (integer and float64 tensors keep float64) at the cost of float32 rounding in the
    running sum (relative error about ``n_updates * 6e-8`` in the worst case).

    A rejected update (names, shapes, dtypes, NaN or infinity, a bad example count) leaves the
    accumulator as if it had never been offered: :meth:`accumulate` checks an update whole
    before adding any of it; :meth:`accumulate_many` checks each block before adding it and,
    if an update fails part-way, rebuilds the accumulator from the updates before it.

    Selection: if ``clients_per_round`` is set, clients are sorted and a window of that size
    rotates with the round number, so every client gets turns and selection is reproducible.
    """

    name = "fedavg"

    def __init__(
        self,
        *,
        clients_per_round: int | None = None,
        accumulator: str = "float64",
        fold_threads: int | None = None,
    ) -> None:
        if clients_per_round is not None and clients_per_round < 1:
            raise ValueError("clients_per_round must be at least 1")
        threads = default_fold_threads() if fold_threads is None else fold_threads
        if not 1 <= threads <= MAX_FOLD_THREADS:
            raise ValueError(f"fold_threads must be 1..{MAX_FOLD_THREADS}, got {fold_threads}")
        self._fold_threads = threads
        if accumulator not in ACCUMULATORS:
            raise ValueError(f"accumulator must be one of {ACCUMULATORS}, got {accumulator!r}")
        self._clients_per_round = clients_per_round
        self._narrow = accumulator == "float32"
        self._spec: ModelSpec | None = None
        self._acc: dict[str, NDArray[Any]] = {}
        self._blank = False  # the accumulator is uninitialised memory (after begin)
        self._scratch: dict[np.dtype[Any], NDArray[Any]] = {}  # accumulate: one block
        # accumulate_many: GROUP + 1 blocks for each fold thread, by (dtype, thread)
        self._stage: dict[tuple[np.dtype[Any], int], NDArray[Any]] = {}
        # accumulate_many: one block of a tensor's own dtype for each fold thread, which
        # block readers fill, by (dtype, thread)
        self._raw: dict[tuple[np.dtype[Any], int], NDArray[Any]] = {}
        self._mask: NDArray[np.bool_] = np.empty(max(FINITE_BLOCK, BLOCK), dtype=np.bool_)
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
        # Uninitialised, not np.zeros: a large calloc'd array is zero-filled page by page
        # on first touch (0.7 s for 400 MB here, against 0.08 s for numpy's own allocation,
        # which asks for huge pages). The first fold writes it; accumulate zeroes it first.
        self._acc = {
            name: np.empty(t.shape, dtype=self._acc_dtype(np.dtype(t.dtype_numpy)))
            for name, t in global_spec.tensors.items()
        }
        self._blank = True
        self._scratch, self._stage, self._raw = {}, {}, {}
        self._total = 0
        self._count = 0

    def _zero(self) -> None:
        for acc in self._acc.values():
            acc.fill(0)
        self._blank = False

    @property
    def fold_threads(self) -> int:
        """Threads a large tensor is folded on (see :data:`MAX_FOLD_THREADS`)."""
        return self._fold_threads

    @property
    def num_updates(self) -> int:
        return self._count

    @property
    def total_examples(self) -> int:
        return self._total

    def _require_spec(self) -> ModelSpec:
        if self._spec is None:
            raise RuntimeError("begin() must be called before accumulating")
        return self._spec

    def _check_names(self, update: Update) -> None:
        spec = self._require_spec()
        if set(update) != set(spec.tensors):
            check_update(update, spec=spec)  # raises with the precise mismatch

    def accumulate(self, update: Mapping[str, NDArray[Any]], num_examples: int) -> None:
        """Fold one update in: each tensor is read twice (checked whole, then added)."""
        spec = self._require_spec()
        num_examples = _checked_count(num_examples)
        self._check_names(update)
        for name, expected in spec.tensors.items():
            if not all_finite(_tensor(update, name, expected), scratch=self._mask):
                raise _nonfinite(name)
        weight = float(num_examples)
        if self._blank:
            self._zero()
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

    def accumulate_many(self, updates: Sequence[tuple[Update, int]]) -> None:
        """Fold ``updates`` in, with the result and the rejections of calling
        :meth:`accumulate` for each in order: if one is rejected, the updates before it are
        folded, it and those after it are not, and its UpdateRejected is raised.

        Right after :meth:`begin` (the round loop's case) the model is walked tensor by
        tensor and block by block; for each block, the block of every update of a group of
        up to GROUP updates is cast into a cache-resident staging array, their weighted sum
        is taken (``np.dot``), checked finite and added to the accumulator's block. Each
        tensor of each update is read once (an encoded update is decoded once per tensor),
        and the accumulator is read and written once per group, not once per update.
        Updates that are :class:`Releasable` have their pages released every WINDOW_BYTES.

        A block is added only once it is known finite, but an update can fail in a later
        block or tensor than one already added; then the accumulator is rebuilt from zero
        with the updates before it (the round loop's updates were all checked on upload, so
        that costs nothing in practice). Called after updates were already accumulated this
        round, it falls back to :meth:`accumulate` per update, which needs no rebuild.
        """
        self._require_spec()
        if not updates:
            return
        if self._count:
            for update, num_examples in updates:
                self.accumulate(update, num_examples)
            return
        try:
            self._fold_all(updates)
        except _Rejected as bad:
            self._zero()
            self._total = 0
            self._count = 0
            self.accumulate_many(updates[: bad.index])  # raises for an earlier one, if any
            raise bad.error from None

    def _fold_all(self, updates: Sequence[tuple[Update, int]]) -> None:
        spec = self._require_spec()
        weights: list[float] = []
        for index, (update, num_examples) in enumerate(updates):
            try:
                weights.append(float(_checked_count(num_examples)))
                self._check_names(update)
            except UpdateRejected as exc:
                raise _Rejected(index, exc) from None
        releases = [u.release if isinstance(u, Releasable) else None for u, _ in updates]
        large = any(a.size >= PARALLEL_BLOCKS * BLOCK for a in self._acc.values())
        pool = (
            ThreadPoolExecutor(max_workers=self._fold_threads, thread_name_prefix="fedtee-fold")
            if large and self._fold_threads > 1
            else None
        )
        try:
            for name, acc in self._acc.items():
                self._fold_tensor(name, acc, spec.tensors[name], updates, weights, releases, pool)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        self._blank = False
        self._total += sum(int(n) for _, n in updates)
        self._count += len(updates)

    def _fold_tensor(
        self,
        name: str,
        acc: NDArray[Any],
        expected: TensorSpec,
        updates: Sequence[tuple[Update, int]],
        weights: list[float],
        releases: list[Callable[[], None] | None],
        pool: ThreadPoolExecutor | None,
    ) -> None:
        start = 0
        while start < len(updates):
            group: list[NDArray[Any]] = []
            readers: list[BlockReader | None] = []
            decoded = 0
            while start + len(group) < len(updates) and len(group) < GROUP:
                index = start + len(group)
                update = updates[index][0]
                try:
                    array = _tensor(update, name, expected)
                except UpdateRejected as exc:
                    raise _Rejected(index, exc) from None
                group.append(array.reshape(-1))
                readers.append(
                    update.block_reader(name) if isinstance(update, BlockReadable) else None
                )
                if array.base is None:  # a decoded copy, not a view of a file map
                    decoded += array.nbytes
                    if decoded >= GROUP_DECODED_BYTES:
                        break
            end = start + len(group)
            self._fold_group(
                name,
                acc.reshape(-1),
                group,
                weights[start:end],
                first=start,
                # A member read through its block reader maps nothing: no pages to release.
                releases=[
                    r
                    for r, read in zip(releases[start:end], readers, strict=True)
                    if r is not None and read is None
                ],
                pool=pool,
                readers=readers,
            )
            start = end

    def _fold_group(
        self,
        name: str,
        acc: NDArray[Any],
        group: list[NDArray[Any]],
        weights: list[float],
        *,
        first: int,
        releases: list[Callable[[], None]],
        pool: ThreadPoolExecutor | None = None,
        readers: Sequence[BlockReader | None] | None = None,
    ) -> None:
        """Add ``sum(weights[k] * group[k])`` to ``acc``, block by block, each block only
        once it is known finite; ``first`` is the batch index of ``group[0]``. With a
        ``pool``, a large tensor is cut into contiguous ranges of whole blocks folded at
        once, one a thread; every range is waited for before any rejection is raised (the
        caller then rebuilds the accumulator), and the lowest rejected index wins."""
        w = np.array(weights, dtype=acc.dtype)
        read: list[BlockReader | None] = (
            list(readers) if readers is not None else [None] * len(group)
        )
        blocks = -(-acc.size // BLOCK)
        parts = 1 if pool is None else min(self._fold_threads, blocks // (PARALLEL_BLOCKS // 2))
        if parts <= 1:
            self._fold_range(
                name, acc, group, read, w, 0, acc.size, first, releases, 0, WINDOW_BYTES
            )
            return
        assert pool is not None
        per = -(-blocks // parts) * BLOCK
        futures: list[Future[None]] = [
            pool.submit(
                self._fold_range,
                name,
                acc,
                group,
                read,
                w,
                lo,
                min(lo + per, acc.size),
                first,
                releases,
                k,
                WINDOW_BYTES // parts,
            )
            for k, lo in enumerate(range(0, acc.size, per))
        ]
        rejected: list[_Rejected] = []
        failed: BaseException | None = None
        for future in futures:
            try:
                future.result()
            except _Rejected as bad:
                rejected.append(bad)
            except BaseException as exc:  # e.g. MemoryError: raised once all ranges are done
                failed = failed or exc
        if failed is not None:
            raise failed
        if rejected:
            raise min(rejected, key=lambda bad: bad.index)

    def _fold_range(
        self,
        name: str,
        acc: NDArray[Any],
        group: list[NDArray[Any]],
        readers: list[BlockReader | None],
        w: NDArray[Any],
        lo: int,
        hi: int,
        first: int,
        releases: list[Callable[[], None]],
        thread: int,
        window_bytes: int,
    ) -> None:
        """:meth:`_fold_group` over elements ``lo:hi`` of ``acc`` (``lo`` on a block
        boundary), with thread ``thread``'s own staging blocks, releasing the members'
        pages every ``window_bytes`` it reads. A member with a reader is read into the
        thread's buffer of its dtype and cast from there, not read from its array."""
        key = (acc.dtype, thread)
        stage = self._stage.get(key)
        if stage is None:
            stage = self._stage[key] = np.empty((GROUP + 1, BLOCK), dtype=acc.dtype)
        rows, summed = stage[: len(group)], stage[GROUP]
        check = group[0].dtype.kind == "f"
        # Release the members' mapped pages every window_bytes read (whole blocks).
        window = max(1, window_bytes // (len(group) * group[0].itemsize * BLOCK)) * BLOCK
        # This thread's block of each member's dtype that its reader fills (None: no reader).
        raws = [
            None if read is None else self._raw_block(array.dtype, thread)
            for array, read in zip(group, readers, strict=True)
        ]
        for i in range(lo, hi, BLOCK):
            n = min(BLOCK, hi - i)
            s, out = rows[:, :n], summed[:n]
            for row, array, read, raw in zip(s, group, readers, raws, strict=True):
                if read is None or raw is None:
                    np.copyto(row, array[i : i + n])
                else:
                    read(i, raw[:n])
                    np.copyto(row, raw[:n])
            np.dot(w, s, out=out)
            # One reduction, no mask: the sum is finite only if every element is (an
            # overflowing sum of finite values is caught below, as accumulate would add it).
            if check and not math.isfinite(float(np.add.reduce(out))):
                for k, row in enumerate(s):
                    if not bool(np.isfinite(row).all()):
                        raise _Rejected(first + k, _nonfinite(name))
                # Finite inputs whose weighted sum overflowed: added, as accumulate would.
            block = acc[i : i + n]
            if first == 0:  # the first group of a fold after begin: write, do not read
                np.copyto(block, out)
            else:
                np.add(block, out, out=block)
            if (i + n - lo) % window == 0 or i + n == hi:
                for release in releases:
                    release()

    def _raw_block(self, dtype: np.dtype[Any], thread: int) -> NDArray[Any]:
        raw = self._raw.get((dtype, thread))
        if raw is None:
            raw = self._raw[(dtype, thread)] = np.empty(BLOCK, dtype=dtype)
        return raw

    def finalize(self) -> Arrays:
        if self._spec is None or self._total == 0:
            raise ValueError("no updates were accumulated this round")
        out: Arrays = {}
        for name in list(self._acc):
            # Each accumulator tensor is dropped as soon as it is converted, so the peak is
            # the accumulator alone, not the accumulator plus the new model.
            acc = self._acc.pop(name)
            dtype = np.dtype(self._spec.tensors[name].dtype_numpy)
            if dtype.kind in "iu":
                np.divide(acc, float(self._total), out=acc)
                out[name] = np.rint(acc).astype(dtype)
            elif dtype == acc.dtype:
                out[name] = np.divide(acc, float(self._total), out=acc)
            else:  # divided in float64 (or float32) and rounded to the model's dtype
                out[name] = _divide_narrowing(acc, float(self._total), dtype)
        self._acc = {}
        self._scratch, self._stage, self._raw = {}, {}, {}
        self._spec = None
        return out


def _divide_narrowing(acc: NDArray[Any], total: float, dtype: np.dtype[Any]) -> NDArray[Any]:
    """``acc / total`` as ``dtype`` (narrower than acc's), written over the front of acc's own
    buffer: no second model-sized array (at round close the new model costs no memory beyond
    the accumulator, and no fresh pages to fault in). Block by block in order, block ``i``'s
    output lies below the input of every later block; where a block's output overlaps its
    own input (the first), numpy's ufunc overlap handling reads it through a copy."""
    flat = acc.reshape(-1)
    out = flat.view(np.uint8)[: flat.size * dtype.itemsize].view(dtype)
    for i in _blocks(flat.size):
        np.divide(flat[i : i + BLOCK], total, out=out[i : i + BLOCK])
    return out.reshape(acc.shape)


__all__ = ["FedAvg", "Releasable", "Strategy"]
