"""A fedtee process's malloc: a bound on its arenas, set once when ``fedtee server start`` or
``fedtee client start`` begins, and returning freed heap memory to the system.

glibc's malloc gives threads their own arenas (up to 8 per core) so that they do not contend
for one lock. gRPC's worker and transport threads each allocate and free chunk-sized
buffers (1 MiB model chunks on their way through protobuf and TLS), and every arena keeps its
own high-water mark of freed memory, so a process's resident memory grew with the number of
threads that had carried a transfer. ``bench_server_memory.py`` measured a 30-client round at
a 3.8 MiB model peaking at 325 MiB with glibc's default and 186 MiB with two arenas, and 100
clients at 680-697 MiB against 490-510 MiB, with round times that differed by less than the
shared test machine's noise. A client at a 40 MB model (bench_flower, N = 2) peaked at
133-136 MiB with the default, 130 with two arenas and 120-122 with one.

Even with two arenas, freed chunks stay resident: glibc gives memory back only from the top of
a heap, and the buffers of a transfer that ended sit between live allocations. The server
therefore calls :func:`trim_freed_memory` (glibc's ``malloc_trim``, which also releases whole
free pages inside its heaps) after transfers end, at most once a second: with 100 clients at
a 3.8 MiB model its peak was 154-161 MiB in four runs against 163-172 MiB in three without
(bench_server_memory's workload), a call taking 2.6 ms (median) with every client in flight.

Both are process-wide, so only the CLI, which owns the process, sets them (the arena bound
through ``mallopt(M_ARENA_MAX)``; the trim interval through the server's config, 0 for a
library caller); a library caller (tests, ``fedtee eval``) keeps its process's malloc as it
is. On a C library without ``mallopt`` or ``malloc_trim`` (musl, macOS) they do nothing. Only the
standard library is imported: the IoT client may load this module.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable

from fedtee._libc import libc_function

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc <malloc.h>
DEFAULT_MALLOC_ARENAS = 2
MAX_MALLOC_ARENAS = 64


def limit_malloc_arenas(arenas: int) -> bool:
    """Let this process's malloc use at most ``arenas`` arenas; 0 keeps the C library's
    default. True when the bound was set. Call it before the process's threads start: glibc
    fixes its arena limit once more than 8 arenas exist."""
    if not 0 <= arenas <= MAX_MALLOC_ARENAS:
        raise ValueError(f"malloc arenas must be 0..{MAX_MALLOC_ARENAS}, got {arenas}")
    if arenas == 0:
        return False
    mallopt = libc_function("mallopt", (ctypes.c_int, ctypes.c_int))
    if mallopt is None:
        log.info("this C library has no mallopt: malloc arenas left at its default")
        return False
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed: malloc arenas left at the default", arenas)
        return False
    return True


_TRIM = libc_function("malloc_trim", (ctypes.c_size_t,))


def trim_freed_memory() -> bool:
    """Give the system back the whole free pages of this process's malloc heaps (glibc's
    ``malloc_trim(0)``); True when some memory was released. Does nothing (False) on a C
    library without it."""
    return _TRIM is not None and bool(_TRIM(0))


class FreedMemoryTrimmer:
    """Runs :func:`trim_freed_memory` when called, at most once every ``interval_s``
    seconds. Thread-safe: a call that finds the interval not yet passed, or another thread
    trimming, returns False at once; True when this call trimmed. ``interval_s`` 0, or a C
    library without ``malloc_trim``, never trims."""

    def __init__(
        self,
        interval_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        trim: Callable[[], object] | None = None,
    ) -> None:
        if not interval_s >= 0:  # also NaN
            raise ValueError(f"interval_s must be >= 0 (0: never trim), got {interval_s}")
        if trim is None and _TRIM is None:
            interval_s = 0.0
        self.interval_s = interval_s
        self._clock = clock
        self._trim = trim if trim is not None else trim_freed_memory
        self._next = 0.0
        self._lock = threading.Lock()
        self.count = 0  # trims run

    def __call__(self) -> bool:
        if self.interval_s == 0:
            return False
        now = self._clock()
        if now < self._next or not self._lock.acquire(blocking=False):
            return False
        try:
            self._next = now + self.interval_s
            self._trim()
            self.count += 1
            return True
        finally:
            self._lock.release()


__all__ = [
    "DEFAULT_MALLOC_ARENAS",
    "MAX_MALLOC_ARENAS",
    "FreedMemoryTrimmer",
    "limit_malloc_arenas",
    "trim_freed_memory",
]
