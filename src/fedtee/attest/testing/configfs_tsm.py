"""A fake configfs-tsm that behaves like the kernel's, on top of a temporary directory.

Use it as the ``filesystem`` of :class:`~fedtee.attest.attesters.configfs_tsm.ConfigfsTsmAttester`
(or of :func:`fedtee.attest.attesters.detect`). It emulates the parts of
Documentation/ABI/testing/configfs-tsm that the attester relies on:

- ``mkdir`` of an entry under ``sys/kernel/config/tsm/report`` populates its attributes;
  ``rmdir`` removes them with the entry (real files are kept in sync, so tests can look).
- Writing ``inblob`` (at most 64 bytes) or ``privlevel`` bumps ``generation``.
- Reading ``outblob`` produces a report from ``make_outblob(inblob, privlevel)``; reading it
  before anything was written fails with EINVAL.
- ``provider``, ``generation``, ``outblob``, ``auxblob`` and ``privlevel_floor`` are
  read-only (EACCES on write); ``inblob`` and ``privlevel`` are write-only.

Knobs for negative tests: ``interfere`` (how many reports get a foreign write between our
read of ``outblob`` and our second read of ``generation``), ``outblob_error`` (an errno
raised when ``outblob`` is read), ``rmdir_error``.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedtee.attest.attesters._devfs import BlobTooLarge
from fedtee.attest.attesters._echo import REPORT_DATA_SIZE, report_data_offset
from fedtee.attest.attesters.configfs_tsm import PROVIDERS, REPORT_DIR

MakeOutblob = Callable[[bytes, "int | None"], bytes]
_INBLOB_MAX = 64
_PRIVLEVEL_MAX = 3
_READ_ONLY = ("provider", "generation", "outblob", "auxblob", "privlevel_floor")
_WRITE_ONLY = ("inblob", "privlevel")


def echo_report(template: bytes, provider: str) -> MakeOutblob:
    """An outblob maker that returns ``template`` with our inblob in its report_data field.

    Like real hardware, the report then carries exactly what was written (the signature in
    a real vector no longer verifies; attester tests do not verify). CCA tokens are CBOR
    and are returned unchanged.
    """
    tee = PROVIDERS[provider]

    def make(inblob: bytes, privlevel: int | None) -> bytes:
        offset = report_data_offset(tee, template)
        if offset is None:
            return template
        padded = inblob.ljust(REPORT_DATA_SIZE, b"\0")
        return template[:offset] + padded + template[offset + REPORT_DATA_SIZE :]

    return make


@dataclass
class _Entry:
    generation: int = 0
    inblob: bytes | None = None
    privlevel: int | None = None


@dataclass
class FakeTsmKernel:
    """configfs-tsm emulation rooted at ``root`` (see the module docstring)."""

    root: Path
    provider: str = "tdx_guest"
    make_outblob: MakeOutblob = field(default=lambda inblob, privlevel: b"")
    auxblob: bytes | None = None
    privlevel_floor: int = 0
    interfere: int = 0
    outblob_error: int | None = None
    rmdir_error: int | None = None
    entries: dict[str, _Entry] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.report_dir.mkdir(parents=True, exist_ok=True)

    @property
    def report_dir(self) -> Path:
        return self.root / REPORT_DIR

    # --- DeviceFilesystem -------------------------------------------------------------
    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)
        if path.parent != self.report_dir:
            return
        self.entries[path.name] = _Entry()
        self.created.append(path.name)
        files = {"provider": f"{self.provider}\n".encode(), "generation": b"0\n"}
        files.update({"inblob": b"", "outblob": b""})
        if self.provider == "sev_guest":
            files["privlevel"] = b""
            files["privlevel_floor"] = f"{self.privlevel_floor}\n".encode()
            files["auxblob"] = b""
        for name, content in files.items():
            (path / name).write_bytes(content)

    def rmdir(self, path: Path) -> None:
        if self.rmdir_error is not None:
            raise OSError(self.rmdir_error, os.strerror(self.rmdir_error), str(path))
        if path.name in self.entries and path.parent == self.report_dir:
            for child in path.iterdir():
                child.unlink()
            del self.entries[path.name]
            self.removed.append(path.name)
        os.rmdir(path)

    def read(self, path: Path, *, limit: int) -> bytes:
        entry = self._entry(path)
        if entry is not None:
            name = path.name
            if name in _WRITE_ONLY:
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            if name == "outblob":
                self._produce(entry, path)
            elif name == "generation" and self.interfere > 0 and entry.inblob is not None:
                # Another writer slips in between our outblob read and this check.
                self.interfere -= 1
                entry.generation += 1
                self._sync(path.parent, entry)
        data = path.read_bytes()
        if len(data) > limit:
            raise BlobTooLarge(f"{path} holds more than {limit} bytes")
        return data

    def write(self, path: Path, data: bytes) -> None:
        entry = self._entry(path)
        if entry is None:
            path.write_bytes(data)
            return
        name = path.name
        if name in _READ_ONLY:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        if name == "inblob":
            if len(data) > _INBLOB_MAX:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            entry.inblob = bytes(data)
        elif name == "privlevel":
            try:
                level = int(data.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path)) from None
            if not self.privlevel_floor <= level <= _PRIVLEVEL_MAX:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            entry.privlevel = level
        else:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        entry.generation += 1
        self._sync(path.parent, entry)

    # --- internals --------------------------------------------------------------------
    def _entry(self, path: Path) -> _Entry | None:
        if path.parent.parent != self.report_dir:
            return None
        return self.entries.get(path.parent.name)

    def _produce(self, entry: _Entry, path: Path) -> None:
        if self.outblob_error is not None:
            raise OSError(self.outblob_error, os.strerror(self.outblob_error), str(path))
        if entry.inblob is None:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
        path.write_bytes(self.make_outblob(entry.inblob, entry.privlevel))
        if self.auxblob is not None and (path.parent / "auxblob").exists():
            (path.parent / "auxblob").write_bytes(self.auxblob)

    def _sync(self, entry_dir: Path, entry: _Entry) -> None:
        (entry_dir / "generation").write_bytes(f"{entry.generation}\n".encode())


__all__ = ["FakeTsmKernel", "MakeOutblob", "echo_report"]
