"""Evidence from an SGX enclave running under Gramine, through ``/dev/attestation``.

Gramine (gramine-sgx) offers remote attestation as pseudo-files inside the enclave:
``/dev/attestation/attestation_type`` says which kind the manifest enabled (fedtee requires
``dcap``: ``sgx.remote_attestation = "dcap"``), writing 64 bytes to
``/dev/attestation/user_report_data`` sets the report data, and reading
``/dev/attestation/quote`` returns a DCAP ECDSA quote (v3) over it, with the PCK certificate
chain inside. The evidence is ``Evidence(tee="sgx", data=quote)`` with no aux.

The write and the read are two steps on process-wide state, so one lock serialises them,
and the quote must echo the report data we wrote before it is handed over.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from fedtee.attest.attesters._devfs import BlobTooLarge, DeviceFilesystem, OsFilesystem
from fedtee.attest.attesters._echo import REPORT_DATA_SIZE, echoed_report_data
from fedtee.attest.model import MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import ConfigError, DeviceError, Reason

# Relative to the filesystem root the attester is given (``/`` inside the enclave).
ATTESTATION_DIR = Path("dev/attestation")
_ATTESTATION_TYPE = "attestation_type"
_USER_REPORT_DATA = "user_report_data"
_QUOTE = "quote"
_REQUIRED_TYPE = "dcap"
_MAX_TYPE_BYTES = 32

_INSTALL_HINT = (
    "run the client inside Gramine's SGX loader (gramine-sgx) with a manifest that sets "
    'sgx.remote_attestation = "dcap" (see deploy/gramine/fedtee-client.manifest.template), on '
    "a host with the SGX DCAP quote provider (libsgx-dcap-default-qpl) and the quoting "
    "enclave service (aesmd, or the in-process libsgx-dcap-ql) installed"
)

# Gramine's pseudo-files are per-process state: one quote at a time in this process.
_QUOTE_LOCK = threading.Lock()


class GramineAttester:
    """Attester for SGX enclaves under Gramine. ``root`` is ``/`` in the enclave."""

    tee: TeeType = TeeType.SGX
    report_data_size: int = REPORT_DATA_SIZE

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] = "/",
        filesystem: DeviceFilesystem | None = None,
    ) -> None:
        self._fs: DeviceFilesystem = filesystem if filesystem is not None else OsFilesystem()
        self._dir = Path(root) / ATTESTATION_DIR
        self.attestation_type = attestation_type(root=root, filesystem=self._fs)
        if self.attestation_type != _REQUIRED_TYPE:
            raise DeviceError(
                f"{self._dir / _ATTESTATION_TYPE} says {self.attestation_type!r}; fedtee needs "
                f"{_REQUIRED_TYPE!r}: {_INSTALL_HINT}",
                reason=Reason.DEVICE_ABSENT,
            )

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != self.report_data_size:
            raise ConfigError(
                f"report_data must be {self.report_data_size} bytes; got {len(report_data)}"
            )
        with _QUOTE_LOCK:
            self._write(report_data)
            quote = self._read_quote()
        echoed = echoed_report_data(TeeType.SGX, quote)
        if echoed is None:
            raise DeviceError(
                f"{self._dir / _QUOTE} returned {len(quote)} bytes that are not an SGX DCAP "
                "quote fedtee recognises",
                reason=Reason.DEVICE_FAILED,
            )
        if echoed != report_data:
            raise DeviceError(
                f"{self._dir / _QUOTE} carries report_data {echoed.hex()[:16]}..., not the "
                f"{report_data.hex()[:16]}... written to {_USER_REPORT_DATA}",
                reason=Reason.DEVICE_FAILED,
            )
        return Evidence(TeeType.SGX, quote)

    def _write(self, report_data: bytes) -> None:
        path = self._dir / _USER_REPORT_DATA
        try:
            self._fs.write(path, report_data)
        except OSError as exc:
            raise DeviceError(
                f"writing {path} failed: {exc.strerror or exc}", reason=Reason.DEVICE_FAILED
            ) from exc

    def _read_quote(self) -> bytes:
        path = self._dir / _QUOTE
        try:
            quote = self._fs.read(path, limit=MAX_EVIDENCE_BYTES)
        except BlobTooLarge as exc:
            raise DeviceError(
                f"{path} is larger than {MAX_EVIDENCE_BYTES} bytes", reason=Reason.DEVICE_FAILED
            ) from exc
        except OSError as exc:
            raise DeviceError(
                f"reading {path} failed: {exc.strerror or exc}; is the host's DCAP quote "
                "provider (libsgx-dcap-default-qpl, PCCS URL in /etc/sgx_default_qcnl.conf) "
                "set up?",
                reason=Reason.DEVICE_FAILED,
            ) from exc
        if not quote:
            raise DeviceError(f"{path} returned no quote", reason=Reason.DEVICE_FAILED)
        return quote


def attestation_type(
    *, root: str | os.PathLike[str] = "/", filesystem: DeviceFilesystem | None = None
) -> str:
    """What ``/dev/attestation/attestation_type`` under ``root`` says ("dcap", "none"...)."""
    fs: DeviceFilesystem = filesystem if filesystem is not None else OsFilesystem()
    path = Path(root) / ATTESTATION_DIR / _ATTESTATION_TYPE
    if not fs.exists(path):
        raise DeviceError(
            f"Gramine attestation interface not found at {path}: {_INSTALL_HINT}",
            reason=Reason.DEVICE_ABSENT,
        )
    try:
        raw = fs.read(path, limit=_MAX_TYPE_BYTES)
        return raw.decode("ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DeviceError(f"could not read {path}: {exc}", reason=Reason.DEVICE_FAILED) from exc


__all__ = ["ATTESTATION_DIR", "GramineAttester", "attestation_type"]
