"""The few file operations the device attesters need, behind one small seam.

configfs-tsm and Gramine's ``/dev/attestation`` are pseudo-filesystems: a write to one file
changes what another file reads. A plain temporary directory cannot do that, so the
attesters do their I/O through :class:`DeviceFilesystem`; :class:`OsFilesystem` is the real
thing and :mod:`fedtee.attest.testing.configfs_tsm` / :mod:`fedtee.attest.testing.gramine`
ship fakes that emulate the kernel / Gramine on top of a temporary directory.

Every read is bounded: at most ``limit`` bytes are accepted, and a file that holds more is
an error rather than a truncated blob.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol


class BlobTooLarge(OSError):
    """A device file held more than the caller's limit."""


class DeviceFilesystem(Protocol):
    def exists(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def rmdir(self, path: Path) -> None: ...

    def read(self, path: Path, *, limit: int) -> bytes:
        """Read the whole file; raise :class:`BlobTooLarge` if it exceeds ``limit`` bytes."""
        ...

    def write(self, path: Path, data: bytes) -> None:
        """Write ``data`` in one ``write`` call (configfs attributes take one write)."""
        ...


class OsFilesystem:
    """The real filesystem (kernel pseudo-files under ``/sys`` and ``/dev``)."""

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path, *, limit: int) -> bytes:
        with open(path, "rb", buffering=0) as f:
            # One byte over the limit tells "exactly at the limit" from "too large".
            chunks: list[bytes] = []
            total = 0
            while True:
                chunk = f.read(limit + 1 - total)
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise BlobTooLarge(f"{path} holds more than {limit} bytes")
        return b"".join(chunks)

    def write(self, path: Path, data: bytes) -> None:
        # configfs binary attributes are written in one go and applied on close.
        with open(path, "wb", buffering=0) as f:
            written = f.write(data)
        if written != len(data):
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")


__all__ = ["BlobTooLarge", "DeviceFilesystem", "OsFilesystem"]
