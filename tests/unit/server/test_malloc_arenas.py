"""[server] malloc_arenas: glibc's malloc arenas of the server process, bounded at start.

The bound is process-wide, so each case runs in a fresh interpreter; the number of arenas is
read from glibc's own report (``malloc_stats`` prints one "Arena N:" block per arena).
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.server import parse_server_config
from fedtee.errors import ConfigError
from fedtee.memory import DEFAULT_MALLOC_ARENAS, limit_malloc_arenas

_glibc = sys.platform == "linux" and "libc.so.6" in (ctypes.util.find_library("c") or "")

# Eight threads alive at once, each allocating from malloc (64 KiB: past Python's small-object
# allocator, below glibc's mmap threshold): without a bound, each new thread gets an arena.
_PROBE = """
import ctypes, sys, threading
from fedtee.memory import limit_malloc_arenas
print(limit_malloc_arenas(int(sys.argv[1])), flush=True)
hold = []
barrier = threading.Barrier(8)
def work():
    hold.append(bytearray(64 * 1024))
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(bound: int) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(bound)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


@pytest.mark.skipif(not _glibc, reason="mallopt(M_ARENA_MAX) is glibc's")
def test_a_bound_caps_the_arenas_that_threads_get() -> None:
    assert _arenas(2) == ("True", 2)


@pytest.mark.skipif(not _glibc, reason="mallopt(M_ARENA_MAX) is glibc's")
def test_zero_leaves_glibcs_default_of_an_arena_per_thread() -> None:
    said, arenas = _arenas(0)
    assert said == "False"
    assert arenas > 2


def test_out_of_range_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        limit_malloc_arenas(-1)
    with pytest.raises(ValueError):
        limit_malloc_arenas(65)


def _text(extra: str) -> str:
    text = server_toml(InitOptions(directory=Path("fed"), federation_id="f"))
    return text.replace("[server]\n", f"[server]\n{extra}\n", 1)


def test_server_toml_malloc_arenas_defaults_to_two_and_can_be_set() -> None:
    assert parse_server_config(_text(""), base_dir=Path("fed")).malloc_arenas == 2
    assert DEFAULT_MALLOC_ARENAS == 2
    assert parse_server_config(_text("malloc_arenas = 0"), base_dir=Path("fed")).malloc_arenas == 0
    assert parse_server_config(_text("malloc_arenas = 8"), base_dir=Path("fed")).malloc_arenas == 8


@pytest.mark.parametrize("value", ["-1", "65", "2.5", '"2"', "true"])
def test_server_toml_malloc_arenas_out_of_range_or_mistyped_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="malloc_arenas"):
        parse_server_config(_text(f"malloc_arenas = {value}"), base_dir=Path("fed"))
