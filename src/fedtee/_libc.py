"""Functions of the process's C library, bound through ctypes, for the few calls Python's
``os`` lacks (``mallopt``, ``malloc_trim``, ``sync_file_range``). Standard library only: the
IoT client loads it through :mod:`fedtee.memory`."""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any


def libc_function(name: str, argtypes: tuple[Any, ...]) -> Callable[..., int] | None:
    """The C library's ``name`` taking ``argtypes`` and returning an int, or None where this
    C library has no such function (musl lacks ``malloc_trim``; macOS lacks all three)."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (AttributeError, OSError):
        return None
    function.argtypes = argtypes
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]
