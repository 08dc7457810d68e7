"""A fedtee process's malloc arenas: a bound, set once when ``fedtee server start`` or
``fedtee client start`` begins.

glibc's malloc gives threads their own arenas (up to 8 per core) so that they do not contend
for one lock. gRPC's worker and transport threads each allocate and free chunk-sized
buffers (1 MiB model chunks on their way through protobuf and TLS), and every arena keeps its
own high-water mark of freed memory, so a process's resident memory grew with the number of
threads that had carried a transfer. ``bench_server_memory.py`` measured a 30-client round at
a 3.8 MiB model peaking at 325 MiB with glibc's default and 186 MiB with two arenas, and 100
clients at 680-697 MiB against 490-510 MiB, with round times that differed by less than the
shared test machine's noise. A client at a 40 MB model (bench_flower, N = 2) peaked at
133-136 MiB with the default, 130 with two arenas and 120-122 with one.

The bound is process-wide (``mallopt(M_ARENA_MAX)``), so only the CLI, which owns the
process, sets it; a library caller (tests, ``fedtee eval``) keeps its process's malloc as it
is. On a C library without ``mallopt`` (musl, macOS) it does nothing and says so. Only the
standard library is imported: the IoT client may load this module.
"""

from __future__ import annotations

import ctypes
import logging

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
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        log.info("this C library has no mallopt: malloc arenas left at its default")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        log.warning("mallopt(M_ARENA_MAX, %d) failed: malloc arenas left at the default", arenas)
        return False
    return True


__all__ = ["DEFAULT_MALLOC_ARENAS", "MAX_MALLOC_ARENAS", "limit_malloc_arenas"]
