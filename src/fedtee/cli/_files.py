"""Reading the operator's local files (configs, policies, PEM files): bounded before they
are read, and every failure a :class:`ConfigError` naming the file."""

from __future__ import annotations

from pathlib import Path

from fedtee.errors import ConfigError

MAX_FILE_BYTES = 1 << 20


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """At most ``limit`` bytes of ``path``; a larger or unreadable file is a ConfigError."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(data) > limit:
        raise ConfigError(f"{path} is larger than {limit} bytes")
    return data


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """A bounded UTF-8 text file (configs, policies); anything else is a ConfigError."""
    try:
        return read_bounded(path, limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc}") from exc
