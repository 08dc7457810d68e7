"""Freed heap memory given back to the system: glibc's malloc_trim, run by the server's round
driver after transfers end, at most once per [server] trim_interval_s (1 s by default for
``fedtee server start``, off for a library caller)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import threading

import pytest

from fedtee import memory
from fedtee.memory import FreedMemoryTrimmer, trim_freed_memory

_glibc = sys.platform == "linux" and "libc.so.6" in (ctypes.util.find_library("c") or "")

# 1,000 malloc'd 64 KiB buffers (below glibc's mmap threshold, so in the heap), all freed but
# the last, which pins the heap's top: free() alone cannot give the pages back, and the
# process's anonymous memory stays about 64 MiB higher until malloc_trim releases them.
_PROBE = """
import sys
from fedtee.memory import trim_freed_memory
def anon_kib():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
held = [bytearray(64 * 1024) for _ in range(1000)]
last = held.pop()
del held
before = anon_kib()
trimmed = trim_freed_memory() if sys.argv[1] == "trim" else False
print(trimmed, before - anon_kib())
"""


def _freed_kib(mode: str) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=60, check=True
    )
    said, freed = done.stdout.split()
    return said, int(freed)


@pytest.mark.skipif(not _glibc, reason="malloc_trim is glibc's")
def test_trimming_gives_back_the_pages_that_free_could_not() -> None:
    said, freed = _freed_kib("trim")
    assert said == "True"
    assert freed > 48 * 1024  # of the 64 MiB freed below the pinned top
    said, kept = _freed_kib("none")
    assert said == "False"
    assert kept < 8 * 1024  # without the trim they stay resident


def test_without_malloc_trim_nothing_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    # musl and macOS have no malloc_trim: the server runs the same, trimming nothing.
    monkeypatch.setattr(memory, "_TRIM", None)
    assert trim_freed_memory() is False
    trimmer = FreedMemoryTrimmer(1.0)
    assert trimmer.interval_s == 0.0
    assert trimmer() is False and trimmer.count == 0


class _Clock:
    t = 100.0

    def __call__(self) -> float:
        return self.t


def test_the_trimmer_runs_at_most_once_per_interval() -> None:
    clock, runs = _Clock(), []
    trimmer = FreedMemoryTrimmer(1.0, clock=clock, trim=lambda: runs.append(clock.t))
    assert trimmer() is True
    assert trimmer() is False  # same instant
    clock.t += 0.99
    assert trimmer() is False
    clock.t += 0.01
    assert trimmer() is True
    assert runs == [100.0, 101.0]
    assert trimmer.count == 2


def test_an_interval_of_zero_never_trims_and_a_negative_one_is_refused() -> None:
    runs: list[int] = []
    trimmer = FreedMemoryTrimmer(0.0, trim=lambda: runs.append(1))
    assert [trimmer() for _ in range(3)] == [False, False, False]
    assert runs == [] and trimmer.count == 0
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="interval_s"):
            FreedMemoryTrimmer(bad)


def test_a_call_while_another_thread_trims_returns_at_once() -> None:
    entered, go = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        go.wait(10)

    clock = _Clock()
    trimmer = FreedMemoryTrimmer(0.001, clock=clock, trim=slow)
    first = threading.Thread(target=trimmer)
    first.start()
    assert entered.wait(10)
    clock.t += 1.0  # the interval has passed, but a trim is running
    assert trimmer() is False
    go.set()
    first.join(10)
    assert trimmer.count == 1
