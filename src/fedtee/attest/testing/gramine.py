"""A fake Gramine ``/dev/attestation`` on top of a temporary directory.

Use it as the ``filesystem`` of :class:`~fedtee.attest.attesters.gramine.GramineAttester`
(or of :func:`fedtee.attest.attesters.detect`). Like Gramine, ``user_report_data`` accepts
exactly 64 bytes, and reading ``quote`` returns ``make_quote(user_report_data)``;
``attestation_type`` is read-only. ``quote_error`` makes reading the quote fail with that
errno (a host without a working DCAP quote provider).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fedtee.attest.attesters._devfs import BlobTooLarge
from fedtee.attest.attesters._echo import REPORT_DATA_SIZE, report_data_offset
from fedtee.attest.attesters.gramine import ATTESTATION_DIR
from fedtee.attest.model import TeeType

MakeQuote = Callable[[bytes], bytes]


def echo_quote(template: bytes) -> MakeQuote:
    """A quote maker returning ``template`` with the written report data in its body."""

    def make(report_data: bytes) -> bytes:
        offset = report_data_offset(TeeType.SGX, template)
        if offset is None:
            return template
        return template[:offset] + report_data + template[offset + REPORT_DATA_SIZE :]

    return make


@dataclass
class FakeGramine:
    root: Path
    attestation_type: str = "dcap"
    make_quote: MakeQuote = field(default=lambda report_data: b"")
    quote_error: int | None = None
    user_report_data: bytes = bytes(REPORT_DATA_SIZE)
    quotes_served: int = 0

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "attestation_type").write_bytes(f"{self.attestation_type}\n".encode())
        (self.dir / "user_report_data").write_bytes(b"")
        (self.dir / "quote").write_bytes(b"")

    @property
    def dir(self) -> Path:
        return self.root / ATTESTATION_DIR

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        os.mkdir(path)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def read(self, path: Path, *, limit: int) -> bytes:
        if path == self.dir / "quote":
            if self.quote_error is not None:
                raise OSError(self.quote_error, os.strerror(self.quote_error), str(path))
            path.write_bytes(self.make_quote(self.user_report_data))
            self.quotes_served += 1
        data = path.read_bytes()
        if len(data) > limit:
            raise BlobTooLarge(f"{path} holds more than {limit} bytes")
        return data

    def write(self, path: Path, data: bytes) -> None:
        if path == self.dir / "user_report_data":
            if len(data) != REPORT_DATA_SIZE:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), str(path))
            self.user_report_data = bytes(data)
        elif path.parent == self.dir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        path.write_bytes(data)


__all__ = ["FakeGramine", "MakeQuote", "echo_quote"]
