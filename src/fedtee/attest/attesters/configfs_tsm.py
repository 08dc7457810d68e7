"""Evidence from Linux configfs-tsm: one code path for TDX, SEV-SNP and Arm CCA guests.

Linux 6.7 and later expose the confidential-guest report interface at
``/sys/kernel/config/tsm/report`` (Documentation/ABI/testing/configfs-tsm). A report is made
by creating an entry (``mkdir`` of a unique name), writing up to 64 bytes to ``inblob``
(and, for SEV-SNP, optionally the VMPL to ``privlevel``), then reading ``outblob`` (the
TDX quote, SNP report or CCA token) and ``auxblob`` (SNP's certificate table). ``provider``
names the driver, ``generation`` counts the writes to the entry.

Concurrency: anything that can open our entry can write to it between our write and our
read, and the kernel then hands us a report for *their* inblob. The ABI's answer is the
generation counter: we read it before writing and again after reading ``outblob``; the
second value must be the first plus the writes we made, otherwise the attempt is discarded
(``DEVICE_BUSY``) and retried in a fresh entry, a bounded number of times. We also check
that the report echoes the report_data we wrote (TDX, SNP), which catches the same race
from the other side. The entry is always removed, on success and on failure.

Evidence produced (the aux names the verifiers read):

=============  ==========================  ========================================
provider       ``Evidence.tee`` / data     aux
=============  ==========================  ========================================
tdx_guest      ``tdx``: quote (v4/v5)      none (PCK chain is inside the quote)
sev_guest      ``sev-snp``: report         ``certs``: auxblob, when the host gave one
arm_cca_guest  ``cca``: CCA token (CBOR)   none
=============  ==========================  ========================================
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from fedtee.attest.attesters._devfs import BlobTooLarge, DeviceFilesystem, OsFilesystem
from fedtee.attest.attesters._echo import REPORT_DATA_SIZE, echoed_report_data
from fedtee.attest.model import MAX_AUX_BYTES, MAX_EVIDENCE_BYTES, Evidence, TeeType
from fedtee.errors import ConfigError, DeviceError, Reason

_log = logging.getLogger(__name__)

# Relative to the filesystem root the attester is given (``/`` on a real guest).
REPORT_DIR = Path("sys/kernel/config/tsm/report")

PROVIDERS: Mapping[str, TeeType] = MappingProxyType(
    {
        "tdx_guest": TeeType.TDX,
        "sev_guest": TeeType.SEV_SNP,
        "arm_cca_guest": TeeType.CCA,
    }
)

# What the operator must provide when the interface is there but a report fails.
_HINTS: Mapping[str, str] = MappingProxyType(
    {
        "tdx_guest": (
            "the host must run the TDX Quote Generation Service (qgsd) and expose it to "
            "the guest (vsock or GetQuote TDVMCALL)"
        ),
        "sev_guest": "the AMD secure processor refused the request; check dmesg for sev-guest",
        "arm_cca_guest": "the RMM refused the request; check dmesg for arm-cca-guest",
    }
)

_INSTALL_HINT = (
    "configfs-tsm needs a confidential guest running Linux 6.7 or later with CONFIG_TSM_REPORTS "
    "and its provider driver (tdx_guest, sev_guest or arm_cca_guest) loaded, and configfs "
    "mounted (mount -t configfs none /sys/kernel/config)"
)

# Attribute names in a report entry (Documentation/ABI/testing/configfs-tsm).
_INBLOB = "inblob"
_OUTBLOB = "outblob"
_AUXBLOB = "auxblob"
_PROVIDER = "provider"
_GENERATION = "generation"
_PRIVLEVEL = "privlevel"
_PRIVLEVEL_FLOOR = "privlevel_floor"

_MAX_TEXT_ATTR = 64  # provider names and decimal counters are a few bytes
_PRIVLEVEL_MAX = 3  # the kernel's TSM_PRIVLEVEL_MAX
DEFAULT_ATTEMPTS = 3
MAX_ATTEMPTS = 10


@dataclass(frozen=True)
class TsmReport:
    """One report as the kernel returned it, before it becomes :class:`Evidence`."""

    provider: str
    generation: int
    outblob: bytes
    auxblob: bytes
    privlevel: int | None = None


class _GenerationMoved(Exception):
    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"generation {found}, expected {expected}")
        self.expected = expected
        self.found = found


def tee_for_provider(provider: str) -> TeeType:
    """Map a configfs-tsm provider name to the evidence type it produces."""
    tee = PROVIDERS.get(provider)
    if tee is None:
        known = ", ".join(sorted(PROVIDERS))
        raise DeviceError(
            f"configfs-tsm provider {provider!r} is not one fedtee supports ({known})",
            reason=Reason.DEVICE_ABSENT,
        )
    return tee


def evidence_from_report(report: TsmReport) -> Evidence:
    """Turn a kernel report into :class:`Evidence` (see the table in the module docstring)."""
    tee = tee_for_provider(report.provider)
    if not report.outblob:
        raise DeviceError(
            f"configfs-tsm provider {report.provider} returned an empty outblob",
            reason=Reason.DEVICE_FAILED,
        )
    aux: dict[str, bytes] = {}
    if tee is TeeType.SEV_SNP and report.auxblob:
        aux["certs"] = report.auxblob
    return Evidence(tee, report.outblob, aux)


class ConfigfsTsmAttester:
    """Attester for TDX, SEV-SNP and CCA guests through configfs-tsm.

    ``root`` is the filesystem root (a temporary tree in tests); ``privlevel`` asks SEV-SNP
    for a report at that VMPL (0..3, at or above the kernel's ``privlevel_floor``);
    ``expect_tee`` makes construction fail unless the provider produces that evidence type;
    ``attempts`` bounds the retries after a concurrent writer was seen.

    Construction probes the provider once (a short-lived entry), so ``tee`` is known and an
    absent device is reported at start-up rather than at the first challenge.
    """

    report_data_size: int = REPORT_DATA_SIZE

    def __init__(
        self,
        *,
        root: str | os.PathLike[str] = "/",
        privlevel: int | None = None,
        expect_tee: TeeType | str | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        filesystem: DeviceFilesystem | None = None,
    ) -> None:
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise ConfigError(f"attempts must be 1..{MAX_ATTEMPTS}; got {attempts}")
        if privlevel is not None and not 0 <= privlevel <= _PRIVLEVEL_MAX:
            raise ConfigError(f"privlevel must be 0..{_PRIVLEVEL_MAX}; got {privlevel}")
        self._fs: DeviceFilesystem = filesystem if filesystem is not None else OsFilesystem()
        self._report_dir = Path(root) / REPORT_DIR
        self._attempts = attempts
        self._privlevel = privlevel
        self.provider = probe_provider(root=root, filesystem=self._fs)
        self.tee: TeeType = tee_for_provider(self.provider)
        if expect_tee is not None:
            wanted = TeeType(expect_tee)
            if wanted is not self.tee:
                raise DeviceError(
                    f"asked for {wanted.value} evidence, but the configfs-tsm provider at "
                    f"{self._report_dir} is {self.provider} ({self.tee.value})",
                    reason=Reason.DEVICE_ABSENT,
                )
        if privlevel is not None and self.tee is not TeeType.SEV_SNP:
            raise ConfigError(
                f"privlevel applies to SEV-SNP (VMPL) only; this guest's provider is "
                f"{self.provider}"
            )

    def attest(self, report_data: bytes) -> Evidence:
        if len(report_data) != self.report_data_size:
            raise ConfigError(
                f"report_data must be {self.report_data_size} bytes; got {len(report_data)}"
            )
        report = self.report(report_data)
        if report.provider != self.provider:
            raise DeviceError(
                f"configfs-tsm provider changed from {self.provider} to {report.provider}",
                reason=Reason.DEVICE_FAILED,
            )
        evidence = evidence_from_report(report)
        if self.tee in (TeeType.TDX, TeeType.SEV_SNP):
            echoed = echoed_report_data(self.tee, evidence.data)
            if echoed is None:
                raise DeviceError(
                    f"{self.provider} outblob ({len(evidence.data)} bytes) is not a "
                    f"{self.tee.value} report fedtee recognises",
                    reason=Reason.DEVICE_FAILED,
                )
            if echoed != report_data:
                raise DeviceError(
                    f"{self.provider} outblob carries report_data {echoed.hex()[:16]}..., not "
                    f"the {report_data.hex()[:16]}... written to inblob",
                    reason=Reason.DEVICE_FAILED,
                )
        return evidence

    def report(self, inblob: bytes) -> TsmReport:
        """Make one report for ``inblob``, retrying in a fresh entry if a writer interferes."""
        last: _GenerationMoved | None = None
        for _ in range(self._attempts):
            try:
                return self._one_report(inblob)
            except _GenerationMoved as moved:
                _log.info("configfs-tsm entry written concurrently (%s); retrying", moved)
                last = moved
        assert last is not None
        raise DeviceError(
            f"configfs-tsm report entries under {self._report_dir} were written concurrently "
            f"in all {self._attempts} attempts (last: generation {last.found}, expected "
            f"{last.expected})",
            reason=Reason.DEVICE_BUSY,
        )

    def _one_report(self, inblob: bytes) -> TsmReport:
        entry = _make_entry(self._fs, self._report_dir)
        try:
            provider = _read_text(self._fs, entry / _PROVIDER)
            before = _read_int(self._fs, entry / _GENERATION)
            writes = 0
            if self._privlevel is not None:
                self._check_privlevel_floor(entry)
                _write(self._fs, entry / _PRIVLEVEL, f"{self._privlevel}\n".encode(), provider)
                writes += 1
            _write(self._fs, entry / _INBLOB, inblob, provider)
            writes += 1
            outblob = _read_blob(self._fs, entry / _OUTBLOB, MAX_EVIDENCE_BYTES, provider)
            auxblob = b""
            if self._fs.exists(entry / _AUXBLOB):
                auxblob = _read_blob(self._fs, entry / _AUXBLOB, MAX_AUX_BYTES, provider)
            after = _read_int(self._fs, entry / _GENERATION)
            if after != before + writes:
                raise _GenerationMoved(before + writes, after)
            return TsmReport(
                provider=provider,
                generation=after,
                outblob=outblob,
                auxblob=auxblob,
                privlevel=self._privlevel,
            )
        finally:
            _remove_entry(self._fs, entry)

    def _check_privlevel_floor(self, entry: Path) -> None:
        assert self._privlevel is not None
        floor_path = entry / _PRIVLEVEL_FLOOR
        if not self._fs.exists(floor_path):
            return
        floor = _read_int(self._fs, floor_path)
        if self._privlevel < floor:
            raise ConfigError(
                f"privlevel {self._privlevel} is below this guest's privlevel_floor {floor}"
            )


def probe_provider(
    *, root: str | os.PathLike[str] = "/", filesystem: DeviceFilesystem | None = None
) -> str:
    """Name of the configfs-tsm provider under ``root`` (creates and removes one entry)."""
    fs: DeviceFilesystem = filesystem if filesystem is not None else OsFilesystem()
    report_dir = Path(root) / REPORT_DIR
    if not fs.exists(report_dir):
        raise DeviceError(
            f"configfs-tsm report interface not found at {report_dir}: {_INSTALL_HINT}",
            reason=Reason.DEVICE_ABSENT,
        )
    entry = _make_entry(fs, report_dir)
    try:
        return _read_text(fs, entry / _PROVIDER)
    finally:
        _remove_entry(fs, entry)


def _make_entry(fs: DeviceFilesystem, report_dir: Path) -> Path:
    # A name of our own per report: two fedtee processes never share an entry.
    entry = report_dir / f"fedtee-{os.getpid()}-{secrets.token_hex(8)}"
    try:
        fs.mkdir(entry)
    except FileNotFoundError as exc:
        raise DeviceError(
            f"configfs-tsm report interface not found at {report_dir}: {_INSTALL_HINT}",
            reason=Reason.DEVICE_ABSENT,
        ) from exc
    except PermissionError as exc:
        raise DeviceError(
            f"not allowed to create a report entry in {report_dir} ({exc.strerror}): run the "
            "client as root or give its user write access to that directory",
            reason=Reason.DEVICE_FAILED,
        ) from exc
    except OSError as exc:
        raise DeviceError(
            f"could not create a report entry in {report_dir}: {exc}",
            reason=Reason.DEVICE_FAILED,
        ) from exc
    return entry


def _remove_entry(fs: DeviceFilesystem, entry: Path) -> None:
    try:
        fs.rmdir(entry)
    except OSError as exc:
        # Never mask the report's own outcome; a leaked entry holds no secret (inblob is
        # a public hash) and is removed by the next reboot.
        _log.warning("could not remove configfs-tsm entry %s: %s", entry, exc)


def _read_text(fs: DeviceFilesystem, path: Path) -> str:
    try:
        raw = fs.read(path, limit=_MAX_TEXT_ATTR)
    except BlobTooLarge as exc:
        raise DeviceError(f"{path} is unexpectedly large", reason=Reason.DEVICE_FAILED) from exc
    except OSError as exc:
        reason = Reason.DEVICE_ABSENT if exc.errno == errno.ENXIO else Reason.DEVICE_FAILED
        hint = f": {_INSTALL_HINT}" if reason is Reason.DEVICE_ABSENT else ""
        raise DeviceError(
            f"could not read {path}: {exc.strerror or exc}{hint}", reason=reason
        ) from exc
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError as exc:
        raise DeviceError(f"{path} is not ASCII text", reason=Reason.DEVICE_FAILED) from exc
    if not text:
        raise DeviceError(f"{path} is empty", reason=Reason.DEVICE_FAILED)
    return text


def _read_int(fs: DeviceFilesystem, path: Path) -> int:
    text = _read_text(fs, path)
    if not text.isdigit():
        raise DeviceError(
            f"{path} holds {text[:20]!r}, not a decimal counter", reason=Reason.DEVICE_FAILED
        )
    return int(text)


def _write(fs: DeviceFilesystem, path: Path, data: bytes, provider: str) -> None:
    try:
        fs.write(path, data)
    except OSError as exc:
        raise DeviceError(
            f"writing {path.name} of a {provider} report failed: {exc.strerror or exc}",
            reason=Reason.DEVICE_FAILED,
        ) from exc


def _read_blob(fs: DeviceFilesystem, path: Path, limit: int, provider: str) -> bytes:
    try:
        return fs.read(path, limit=limit)
    except BlobTooLarge as exc:
        raise DeviceError(
            f"{path.name} of the {provider} report is larger than {limit} bytes",
            reason=Reason.DEVICE_FAILED,
        ) from exc
    except OSError as exc:
        hint = _HINTS.get(provider, "")
        raise DeviceError(
            f"reading {path.name} of a {provider} report failed: {exc.strerror or exc}"
            + (f"; {hint}" if hint else ""),
            reason=Reason.DEVICE_FAILED,
        ) from exc


__all__ = [
    "DEFAULT_ATTEMPTS",
    "PROVIDERS",
    "REPORT_DIR",
    "ConfigfsTsmAttester",
    "TsmReport",
    "evidence_from_report",
    "probe_provider",
    "tee_for_provider",
]
