"""Fault tests run the server as an operator does: ``fedtee init --with-sim`` files, then
``fedtee server start`` as a real subprocess (so it can be killed with SIGKILL), with TLS gRPC
on loopback, a SQLite file and the ledger on disk. Clients are virtual clients of the load
generator (:mod:`fedtee.eval.loadgen`) or the real client runtime."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fedtee.attest.attesters.sim import SimRoot
from fedtee.cli.init import DEFAULT_TRAINER, InitOptions, init_federation, trainer_measurement
from fedtee.eval.loadgen import LoadOptions, LoadReport, LoadTarget, run_load
from fedtee.ledger.log import LedgerReport, verify_ledger
from fedtee.server.store import RoundRecord, StateStore

FED = "faults"
_MEASUREMENT: list[bytes] = []


def measurement() -> bytes:
    if not _MEASUREMENT:  # hashing the trainer module once per session is enough
        _MEASUREMENT.append(trainer_measurement(DEFAULT_TRAINER))
    return _MEASUREMENT[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Federation:
    """One federation directory and its server process."""

    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    def configure(self, **values: object) -> None:
        """Set ``key = value`` lines of server.toml (the keys fedtee init writes)."""
        path = self.directory / "server.toml"
        lines = path.read_text().splitlines()
        for key, value in values.items():
            rendered = f'"{value}"' if isinstance(value, str) else str(value)
            matches = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
            assert len(matches) == 1, f"server.toml has {len(matches)} lines for {key}"
            lines[matches[0]] = f"{key} = {rendered}"
        path.write_text("\n".join(lines) + "\n")

    def target(self, *, server_name: str = "localhost") -> LoadTarget:
        return LoadTarget(
            address=f"127.0.0.1:{self.port}",
            ca_pem=(self.directory / "ca.pem").read_bytes(),
            sim_root=SimRoot.from_pem(
                (self.directory / "sim-root.pem").read_bytes(),
                (self.directory / "sim-root.key").read_bytes(),
            ),
            measurement=measurement(),
            server_name=server_name,
        )

    def start(self, *, script: list[str] | None = None) -> None:
        """``fedtee server start`` (or ``script``, a command with the same config) and wait
        until it listens."""
        assert self.proc is None or self.proc.poll() is not None
        log = self.directory / f"server-{len(self.logs)}.log"
        self.logs.append(log)
        cmd = script or [sys.executable, "-m", "fedtee.cli.main", "server", "start"]
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*cmd, "--config", str(self.directory / "server.toml")],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.extra_env},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited early:\n{self.log_text()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not listen:\n{self.log_text()}")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed or checkpointed."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait_exit(self, timeout_s: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in self.logs
        )

    def rounds(self) -> list[RoundRecord]:
        store = StateStore.open(str(self.state_dir / "state.db"))
        try:
            return store.rounds(FED)
        finally:
            store.close()

    def ledger(self) -> LedgerReport:
        key = (self.state_dir / "ledger-key.pem").read_bytes()
        from cryptography.hazmat.primitives import serialization

        der = serialization.load_pem_public_key(key).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return verify_ledger((self.state_dir / "ledger.jsonl").read_bytes(), server_public_key=der)

    def load(self, clients: int, **options: object) -> LoadReport:
        return asyncio.run(
            run_load(self.target(), LoadOptions(clients=clients, **options))  # type: ignore[arg-type]
        )


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    port = free_port()
    init_federation(
        InitOptions(
            directory=tmp_path,
            federation_id=FED,
            with_sim=True,
            port=port,
            rounds=2,
            clients_per_round=3,
            min_clients=3,
        )
    )
    fed = Federation(directory=tmp_path, port=port)
    fed.configure(round_timeout_s=60.0, start_wait_s=30.0)
    yield fed
    fed.stop()
