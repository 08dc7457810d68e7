"""Software TPMs for development and the demo: swtpm provisioned with its own local EK CA.

:class:`Swtpm` provisions a software TPM in its own directory with its own local CA (never the
system-wide ``/var/lib/swtpm-localca``): ``swtpm_setup --tpm2 --create-ek-cert
--create-platform-cert --lock-nvram`` writes an RSA-2048 EK (persistent 0x81010001, certificate
in NV 0x01C00002) and an ECC P-384 EK (0x81010016, NV 0x01C00016), certified by a fresh
``swtpm-localca`` issuer under a fresh root. It then serves the TPM on a free loopback port
(``swtpm socket --server type=tcp --ctrl type=tcp --flags startup-clear``).

swtpm is a real TPM 2.0 implementation (libtpms) in software: its quotes verify like a
hardware TPM's, but its keys live in a file, so a server must trust its local EK CA only for
development (``fedtee demo --tee tpm``, the integration tests). Used by the CLI and by tests;
it starts processes, so it is not imported by the verifier or the attesters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cryptography import x509

from fedtee.errors import DeviceError, Reason

SWTPM_TOOLS = ("swtpm", "swtpm_setup", "swtpm_localca")
_START_TIMEOUT_S = 10.0
_START_ATTEMPTS = 3


def swtpm_missing() -> str | None:
    """Why a real swtpm cannot run here (None when it can)."""
    absent = [t for t in SWTPM_TOOLS if shutil.which(t) is None]
    if absent:
        return (
            f"{', '.join(absent)} not found: install the Debian packages swtpm and swtpm-tools "
            "(scripts/setup.sh does so when run as root)"
        )
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError as exc:
        return (
            f"tpm2-pytss is not importable ({exc}): install libtss2-dev and "
            "`pip install 'fedtee[tpm]'`"
        )
    return None


def _free_port_pair() -> int:
    """A port P such that P and P+1 were free on loopback a moment ago."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise DeviceError("no free loopback port pair for swtpm", reason=Reason.DEVICE_BUSY)


@dataclass
class Swtpm:
    """A provisioned swtpm serving on loopback; use as a context manager."""

    directory: Path
    ca_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)

    @classmethod
    def provision(cls, directory: Path | None = None, *, ca_dir: Path | None = None) -> Swtpm:
        """Provision a fresh TPM state (and a fresh local CA unless ``ca_dir`` is shared).

        Pass the same ``ca_dir`` to several TPMs to have one EK CA certify them all."""
        why = swtpm_missing()
        if why is not None:
            raise DeviceError(why, reason=Reason.DEVICE_ABSENT)
        own = directory is None
        root = Path(tempfile.mkdtemp(prefix="fedtee-swtpm-")) if directory is None else directory
        state = root / "state"
        ca = ca_dir if ca_dir is not None else root / "ca"
        state.mkdir(parents=True, exist_ok=True)
        ca.mkdir(parents=True, exist_ok=True)
        (ca / "localca.conf").write_text(
            f"statedir = {ca}\nsigningkey = {ca}/signkey.pem\n"
            f"issuercert = {ca}/issuercert.pem\ncertserial = {ca}/certserial\n"
        )
        (ca / "localca.options").write_text(
            "--platform-manufacturer fedtee\n--platform-version 2.1\n--platform-model swtpm\n"
        )
        (root / "swtpm_setup.conf").write_text(
            "create_certs_tool = /usr/bin/swtpm_localca\n"
            f"create_certs_tool_config = {ca}/localca.conf\n"
            f"create_certs_tool_options = {ca}/localca.options\n"
            "active_pcr_banks = sha256\n"
        )
        cmd = [
            "swtpm_setup", "--tpm2", "--tpmstate", str(state), "--create-ek-cert",
            "--create-platform-cert", "--lock-nvram", "--overwrite",
            "--config", str(root / "swtpm_setup.conf"), "--logfile", str(root / "setup.log"),
        ]  # fmt: skip
        env = {**os.environ, "XDG_CONFIG_HOME": str(root / "xdg")}
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=60, check=False)
        if done.returncode != 0:
            log = (root / "setup.log").read_text(errors="replace")[-2000:]
            if own:
                shutil.rmtree(root, ignore_errors=True)
            raise DeviceError(
                f"swtpm_setup failed ({done.returncode}): {log}", reason=Reason.DEVICE_FAILED
            )
        return cls(directory=root, ca_dir=ca, _own_dir=own)

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> Swtpm:
        """Serve the TPM on a free loopback port pair; retried, since another process may
        take the port between the check and swtpm's bind."""
        for attempt in range(_START_ATTEMPTS):
            try:
                return self._start_once()
            except DeviceError:
                if attempt == _START_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self) -> Swtpm:
        self.port = _free_port_pair()
        cmd = [
            "swtpm", "socket", "--tpm2",
            "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
            "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
            "--tpmstate", f"dir={self.directory / 'state'}",
            "--flags", "not-need-init,startup-clear",
            "--log", f"file={self.directory / 'swtpm.log'}",
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.process = proc
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.process = None
                raise DeviceError(
                    f"swtpm exited with {proc.returncode} on port {self.port}",
                    reason=Reason.DEVICE_FAILED,
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise DeviceError(f"swtpm did not listen on port {self.port}", reason=Reason.DEVICE_FAILED)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        """Stop and start the TPM (a power cycle: TPM2_Startup(CLEAR) bumps resetCount)."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Swtpm:
        return self.start() if self.process is None else self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- the local EK CA ---------------------------------------------------------

    def ca_root(self) -> x509.Certificate:
        """swtpm's local root CA: the anchor a server trusts for these TPMs' EKs."""
        return local_ca_root(self.ca_dir)

    def ca_issuer_pem(self) -> bytes:
        """The intermediate that signs EK certificates (aux ``ek_chain``)."""
        return (self.ca_dir / "issuercert.pem").read_bytes()


def local_ca_root(ca_dir: Path) -> x509.Certificate:
    """The root certificate of a swtpm local CA directory (the EK CA a server trusts)."""
    return x509.load_pem_x509_certificate((ca_dir / "swtpm-localca-rootca-cert.pem").read_bytes())


@contextlib.contextmanager
def running_swtpm(*, ca_dir: Path | None = None) -> Iterator[Swtpm]:
    tpm = Swtpm.provision(ca_dir=ca_dir)
    try:
        yield tpm.start()
    finally:
        tpm.close()


__all__ = ["SWTPM_TOOLS", "Swtpm", "local_ca_root", "running_swtpm", "swtpm_missing"]
