"""Code measurement: one SHA-384 over the files that make up a client's training code.

``measure_code`` hashes, in sorted order of their names, each file's name and contents with
length prefixes, then the configuration bytes. Changing one byte of any file, renaming a
file, or changing the configuration changes the measurement. Paths are keyed by their file
name relative to their common parent, so the same code installed in another directory
measures the same.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

DOMAIN = b"fedtee/v1/code-measurement"
MAX_FILE_BYTES = 64 * 1024 * 1024


def measure_code(paths: Sequence[Path], *, config: bytes = b"") -> bytes:
    """SHA-384 of the named files (and ``config``). Raises FileNotFoundError / ValueError."""
    if not paths:
        raise ValueError("measure_code needs at least one file")
    resolved = [Path(p).resolve() for p in paths]
    base = Path(os.path.commonpath([str(p.parent) for p in resolved]))
    entries = sorted((p.relative_to(base).as_posix(), p) for p in resolved)
    h = hashlib.sha384(DOMAIN)
    for name, path in entries:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path} is {size} bytes; measure_code's limit is {MAX_FILE_BYTES}")
        content = path.read_bytes()
        encoded = name.encode()
        h.update(len(encoded).to_bytes(4, "big") + encoded)
        h.update(len(content).to_bytes(8, "big") + content)
    h.update(len(config).to_bytes(8, "big") + config)
    return h.digest()


__all__ = ["measure_code"]
