"""Fault tests run the server as an operator does: ``fedtee init --with-sim`` files, then
``fedtee server start`` as a real subprocess (so it can be killed with SIGKILL), with TLS gRPC
on loopback, a SQLite file and the ledger on disk. Clients are virtual clients of the load
generator (:mod:`fedtee.eval.loadgen`) or the real client runtime."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fedtee.attest.attesters.sim import SimRoot
from fedtee.cli.init import DEFAULT_TRAINER, InitOptions, init_federation, trainer_measurement
from fedtee.client.transport import Task, TaskKind
from fedtee.eval.loadgen import (
    LoadOptions,
    LoadReport,
    LoadTarget,
    VirtualClient,
    channel,
    run_load,
    stub,
)
from fedtee.ledger.log import LedgerReport, verify_ledger
from fedtee.localnet import free_port
from fedtee.server.store import RoundRecord, StateStore

FED = "faults"
T = TypeVar("T")
_MEASUREMENT: list[bytes] = []


def measurement() -> bytes:
    if not _MEASUREMENT:  # hashing the trainer module once per session is enough
        _MEASUREMENT.append(trainer_measurement(DEFAULT_TRAINER))
    return _MEASUREMENT[0]


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

    def start_faulty(self, point: str) -> None:
        """The server from tests/faults/_faulty_server.py: SIGKILLs itself at ``point``."""
        self.start(
            script=[sys.executable, str(Path(__file__).with_name("_faulty_server.py")), point]
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

    def wait_finished(self, timeout_s: float = 60) -> None:
        """Until the store says the federation finished (read while the server runs)."""
        deadline = time.monotonic() + timeout_s
        while True:
            store = StateStore.open(str(self.state_dir / "state.db"))
            try:
                fed = store.get_federation(FED)
            finally:
                store.close()
            if fed is not None and fed.status.value == "finished":
                return
            assert time.monotonic() < deadline, f"federation did not finish:\n{self.log_text()}"
            time.sleep(0.1)

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

    def ledger_cli(self) -> subprocess.CompletedProcess[str]:
        """``fedtee ledger verify`` on the ledger, pinned to the server's key."""
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "fedtee.cli.main",
                "ledger",
                "verify",
                str(self.state_dir / "ledger.jsonl"),
                "--server-key",
                str(self.state_dir / "ledger-key.pem"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def ledger_entries(self, kind: str) -> list[dict[str, Any]]:
        lines = (self.state_dir / "ledger.jsonl").read_text().splitlines()
        return [e["body"] for e in map(json.loads, lines) if e["kind"] == kind]

    def updates(self, round: int) -> list[str]:
        """Client ids with an accepted update in ``round``, from state.db."""
        store = StateStore.open(str(self.state_dir / "state.db"))
        try:
            return sorted(u.client_id for u in store.updates(FED, round))
        finally:
            store.close()

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


class Clients:
    """Virtual clients of the load generator, driven step by step on one event loop."""

    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.loop = asyncio.new_event_loop()
        self._channels: list[Any] = []

    def run(self, step: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(step)

    def new(
        self, client_id: str, *, clock_offset_ms: int = 0, max_attempts: int = 30
    ) -> VirtualClient:
        target = self.federation.target()

        async def make() -> Any:
            return channel(target)

        chan = self.run(make())
        self._channels.append(chan)
        return VirtualClient(
            client_id=client_id,
            stub=stub(chan),
            target=target,
            options=LoadOptions(
                clients=1,
                clock_offset_ms=clock_offset_ms,
                backoff_max_s=0.5,
                max_attempts=max_attempts,
            ),
        )

    def wait_task(self, client: VirtualClient, kind: TaskKind = TaskKind.TRAIN) -> Task:
        deadline = time.monotonic() + 60
        while True:
            task = self.run(client.task())
            if task.kind is kind:
                return task
            assert time.monotonic() < deadline, f"no {kind} task for {client.result.client_id}"
            time.sleep(0.05)

    def close(self) -> None:
        for chan in self._channels:
            self.run(chan.close())
        self.loop.close()


@pytest.fixture
def clients(federation: Federation) -> Iterator[Clients]:
    c = Clients(federation)
    yield c
    c.close()
