"""FedAvg aggregation throughput at round close against this machine's memory bandwidth.

Run: ``.venv/bin/python bench/bench_aggregate.py [--quick] [--json PATH] [--no-doc]
[--params 10000000,50000000] [--updates 10] [--repeats 5]``.

What the server does at round close, on real stored updates: N float32 updates of P
parameters are written to an ArtifactStore (as uploads are; they then sit in the page cache)
and read back through memory maps, as ``fedtee.server.rounds.aggregate_stored`` reads them.

- **fold**: ``FedAvg.begin``, ``accumulate_many`` over the N mapped updates (every block
  checked finite before it is added), ``finalize`` -- the aggregation itself.
- **round close**: ``aggregate_stored``, what RoundManager runs: the same fold while a thread
  pool re-hashes every stored update (SHA-256 over ``pread``) against its digest, then the
  new model is encoded and written as an artifact (fsynced).
- **one at a time**: ``accumulate`` per update (each update checked whole, then added; the
  path a strategy without ``accumulate_many`` gets, and FedAvg's path before this change).

Throughput: update bytes folded per second (N x P x 4 over the wall time). Memory bandwidth: a
numpy copy (``np.copyto``) of one model-sized float32 array, in bytes copied per second
(STREAM would count twice that: read plus write). Each figure is the best of ``--repeats``
timings, interleaved, since on a shared machine other processes only slow a timing down.
Goal (issue 6): aggregation (the fold) at least 50% of the copy rate.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import numpy as np

from fedtee import codec, tensors
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.rounds import aggregate_stored
from fedtee.server.strategy import BLOCK, GROUP, PARALLEL_BLOCKS, FedAvg, default_fold_threads
from fedtee.tensors import ModelSpec

GOAL = 0.50


class _Mapped:
    """A stored update as the round close maps it (views of a file map, releasable)."""

    def __init__(self, store: ArtifactStore, digest: bytes, spec: ModelSpec, base: Any) -> None:
        self._mapped = store.map(digest, verify=False)
        self._arrays = codec.open_update(self._mapped.view, spec=spec, global_arrays=base)

    def keys(self) -> Any:
        return self._arrays.keys()

    def __iter__(self) -> Any:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __getitem__(self, name: str) -> Any:
        return self._arrays[name]

    def release(self) -> None:
        self._mapped.release()


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def measure(params: int, updates: int, repeats: int, root: Path) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    store = ArtifactStore(root / f"p{params}")
    base = store.map_arrays(store.put(tensors.encode({"w": np.zeros(params, np.float32)})).digest)
    spec = ModelSpec.of(base)
    digests = []
    for _ in range(updates):
        data = tensors.encode({"w": rng.standard_normal(params, dtype=np.float32)})
        digests.append(store.put(data).digest)
        del data
    inputs = [(d, k + 1) for k, d in enumerate(digests)]
    src = rng.standard_normal(params, dtype=np.float32)
    dst = np.empty_like(src)
    nbytes = src.nbytes

    def fold(acc: str, threads: int | None = None) -> Callable[[], object]:
        def run() -> object:
            strategy = FedAvg(accumulator=acc, fold_threads=threads)
            strategy.begin(spec)
            strategy.accumulate_many([(_Mapped(store, d, spec, base), n) for d, n in inputs])
            return strategy.finalize()

        return run

    def one_at_a_time(acc: str) -> Callable[[], object]:
        def run() -> object:
            strategy = FedAvg(accumulator=acc)
            strategy.begin(spec)
            for d, n in inputs:
                mapped = _Mapped(store, d, spec, base)
                strategy.accumulate(mapped, n)
                mapped.release()
            return strategy.finalize()

        return run

    def close(acc: str) -> Callable[[], object]:
        def run() -> object:
            out = aggregate_stored(
                FedAvg(accumulator=acc),
                artifacts=store,
                spec=spec,
                global_arrays=base,
                inputs=inputs,
            )
            store.delete(out.digest)
            return out

        return run

    cases: dict[tuple[str, str], Callable[[], object]] = {}
    for acc in ("float64", "float32"):
        cases[("fold", acc)] = fold(acc)
        if default_fold_threads() > 1:
            cases[("fold, 1 thread", acc)] = fold(acc, threads=1)
        cases[("round close", acc)] = close(acc)
        cases[("one at a time", acc)] = one_at_a_time(acc)
    inf = float("inf")
    best_copy, best_copy_cpu = inf, inf
    best = dict.fromkeys(cases, inf)
    best_cpu = dict.fromkeys(cases, inf)
    for _ in range(repeats):
        wall, cpu = _timed(lambda: np.copyto(dst, src))
        best_copy, best_copy_cpu = min(best_copy, wall), min(best_copy_cpu, cpu)
        for key, fn in cases.items():
            wall, cpu = _timed(fn)
            best[key], best_cpu[key] = min(best[key], wall), min(best_cpu[key], cpu)
    copy_rate = nbytes / best_copy
    rows = []
    for (path, acc), seconds in best.items():
        rate = updates * nbytes / seconds
        cpu_ratio = (updates * nbytes / best_cpu[(path, acc)]) / (nbytes / best_copy_cpu)
        rows.append(
            {
                "params": params,
                "updates": updates,
                "path": path,
                "accumulator": acc,
                "aggregate_gb_s": round(rate / 1e9, 3),
                "copy_gb_s": round(copy_rate / 1e9, 3),
                "ratio": round(rate / copy_rate, 3),
                "goal_met": rate / copy_rate >= GOAL,
                "seconds": round(seconds, 4),
                "cpu_seconds": round(best_cpu[(path, acc)], 4),
                "cpu_ratio": round(cpu_ratio, 3),
            }
        )
    for d in digests:
        store.delete(d)
    return rows


def render(rows: list[dict[str, object]]) -> str:
    return _common.table(
        (
            "P (float32)",
            "updates",
            "path",
            "accumulator",
            "update GB/s",
            "copy GB/s",
            "ratio",
            "seconds",
            "goal >= 50% (fold)",
            "CPU s",
            "ratio by CPU time",
        ),
        (
            (
                f"{r['params']:,}",
                r["updates"],
                r["path"],
                r["accumulator"],
                f"{r['aggregate_gb_s']:.2f}",
                f"{r['copy_gb_s']:.2f}",
                f"{r['ratio']:.0%}",
                f"{r['seconds']:.3f}",
                ("yes" if r["goal_met"] else "**no**") if r["path"] == "fold" else "",
                f"{r['cpu_seconds']:.3f}",
                f"{r['cpu_ratio']:.0%}",
            )
            for r in rows
        ),
        align="rrllrrrrlrr",
    )


def _span(rows: list[dict[str, object]], path: str, acc: str, key: str) -> str:
    values = sorted(
        float(str(r[key])) for r in rows if r["path"] == path and r["accumulator"] == acc
    )
    return f"{values[0]:.0%}" if values[0] == values[-1] else f"{values[0]:.0%}-{values[-1]:.0%}"


def _verdict(rows: list[dict[str, object]]) -> str:
    parts = []
    for acc in ("float64", "float32"):
        met = [bool(r["goal_met"]) for r in rows if r["path"] == "fold" and r["accumulator"] == acc]
        verdict = "met" if all(met) else "missed" if not any(met) else "met at some sizes only"
        parts.append(
            f"{acc} accumulator: fold {_span(rows, 'fold', acc, 'ratio')} of copy "
            f"({_span(rows, 'fold', acc, 'cpu_ratio')} by CPU time), goal {verdict}; "
            + (
                f"on one thread {_span(rows, 'fold, 1 thread', acc, 'ratio')}; "
                if any(r["path"] == "fold, 1 thread" for r in rows)
                else ""
            )
            + f"one at a time {_span(rows, 'one at a time', acc, 'ratio')}"
        )
    return (
        "- Result: "
        + "; ".join(parts)
        + ". Per core the float64 fold's cost is numpy's per-element work: the "
        "float32-to-float64 cast into the stage and the dgemv; the fold threads spread it "
        "over the cores, so a machine with more cores than this one's 2 folds faster until "
        "memory bandwidth binds."
    )


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument(
        "--params", default="10000000,50000000", help="comma-separated model sizes (float32)"
    )
    ap.add_argument("--updates", type=int, default=10, help="updates per aggregation")
    ap.add_argument("--repeats", type=int, default=5, help="timings per figure (best kept)")
    args = ap.parse_args()
    sizes = [10_000_000] if args.quick else [int(x) for x in args.params.split(",")]
    updates = 3 if args.quick else args.updates
    repeats = 3 if args.quick else args.repeats
    info = _common.machine_info()
    print(_common.machine_line(info))
    with tempfile.TemporaryDirectory(prefix="bench-aggregate-") as tmp:
        rows = [row for p in sizes for row in measure(p, updates, repeats, Path(tmp))]
    print(render(rows))
    if args.json:
        _common.write_json(args.json, "aggregate", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        text = "\n".join(
            [
                _common.header(info=info),
                f"- N = {updates} float32 updates of P parameters stored as artifacts (in the "
                "page cache, as after their uploads) and read through memory maps, weights "
                "1..N. **fold**: `FedAvg.begin`, `accumulate_many`, `finalize` (the "
                f"aggregation), on FedAvg's default {default_fold_threads()} fold threads (one "
                "a core, up to 8): a tensor of at least "
                f"{PARALLEL_BLOCKS * BLOCK:,} parameters is cut into contiguous ranges of "
                "whole blocks, one a thread (numpy releases the GIL in the cast and the "
                "product). **fold, 1 thread**: the same on one thread. **round close**: "
                "`fedtee.server.rounds.aggregate_stored`, what "
                "the server runs: the fold while a thread pool re-hashes every stored update "
                "against its digest, then the new model written as an artifact. **one at a "
                "time**: `accumulate` per update (the path before `accumulate_many`, and for "
                "strategies without it).",
                "- update GB/s: update bytes folded per second (N x P x 4 / wall time). copy "
                "GB/s: `np.copyto` of one model-sized float32 array, bytes copied per second "
                f"(STREAM counts twice that). Best of {repeats} interleaved timings. Goal "
                "(issue 6): the fold at >= 50% of copy (wall time). Beside it, for a shared "
                "machine: the best process CPU time (all threads) and the same ratio computed "
                "from CPU times (update bytes per CPU second over copied bytes per CPU second), "
                "which time spent waiting for a core does not inflate.",
                f"- The fold reads each update once: per block of {BLOCK:,} parameters, up to "
                f"{GROUP} updates are cast into a cache-resident float64 (or float32) stage, "
                "their weighted sum (BLAS dgemv, one 16 x 16,384 product per block: below "
                "OpenBLAS's threading threshold, so one thread; CPU time equals wall time "
                "below) is checked finite (one sum) and added to the accumulator (written, "
                "not added, by the first group), "
                f"which so crosses memory once per {GROUP} updates, not once per update. One at "
                "a time reads each update twice (finiteness check, then add) and reads and "
                "writes the accumulator once per update. On one thread the fold is bound by "
                "numpy's per-element work on its core, not by memory: profiled at P = 10M, "
                "N = 10 in memory, the float32-to-float64 cast into the stage takes about "
                "0.5 ns per parameter and update and the dgemv about 0.2 ns (einsum took "
                "0.26), against about 0.7 ns per float32 for the copy; hence the fold "
                "threads, whose gain the two fold rows show (the CPU-time ratio does not "
                "change with threads: the same work, spread). finalize divides the "
                "accumulator and writes the float32 model over the front of its own buffer "
                "(no second model-sized array).",
                "- The round close adds SHA-256 of every stored update (one thread per update, "
                "up to the number of cores) beside the fold, and writes and fsyncs the new "
                "model: on 2 shared cores the hash, not the fold, sets the round-close time; "
                "with more cores than updates it runs in parallel and the fold sets it.",
                _verdict(rows),
                "",
                render(rows),
            ]
        )
        _common.write_doc_section("aggregate", text, title="Aggregation throughput")
        print(f"wrote {_common.DOC.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    main()
