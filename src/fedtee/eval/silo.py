"""Silo-scale federations in real processes, measured: large updates end to end.

:func:`run_silo` does what an operator does: ``fedtee init --with-sim`` (CA, TLS certificate,
sim root, a policy that accepts exactly this module's :class:`ShiftTrainer`), writes a large
initial model (:func:`layered_model`), then runs ``fedtee server start`` and N
``fedtee client start`` processes on loopback TLS gRPC with attestation, receipts and the
ledger on. Each process runs under a small wrapper that reports its exact peak resident set
when it exits (``getrusage(RUSAGE_CHILDREN).ru_maxrss``; no sampling, so no peak is
missed). Every line a client prints is time-stamped as it arrives, which times its phases:
``trained`` -> ``uploading`` is encoding, hashing and signing the update; ``uploading`` ->
``update_accepted`` is the upload itself, with the server spooling, hashing and checking it.

Used by ``tests/integration/test_silo_large.py`` (memory bounds) and ``bench/bench_silo.py``
(figures in docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from fedtee import tensors
from fedtee.client.trainer import EvalResult, FitResult
from fedtee.localnet import free_port, wait_for_port

MiB = 1 << 20
TENSOR_BYTES = 4 * MiB  # a layer of a large network, roughly
FEDERATION = "silo"
TRAINER = "fedtee.eval.silo:ShiftTrainer"
STEP = 1e-3

_WRAPPER = (
    "import resource, signal, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[1:])\n"
    "signal.signal(signal.SIGTERM, lambda *_: child.terminate())\n"
    "code = child.wait()\n"
    "print('peak-rss-kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)
_EVENT = re.compile(r"^\[(?P<client>[^\]]+)\] (?P<kind>[a-z_]+)(?: round=(?P<round>\d+))?")


class ShiftTrainer:
    """The model is whatever the server sends; the update adds a small constant to every
    floating-point tensor, one new array per tensor. So the trainer's own memory is exactly
    one model (its output), and the rest of a client's memory is fedtee's."""

    def __init__(self, *, partition: int, num_partitions: int, seed: int) -> None:
        del num_partitions, seed
        self.examples = partition + 1

    def fit(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> FitResult:
        out = {
            name: a + a.dtype.type(STEP) if a.dtype.kind == "f" else np.array(a)
            for name, a in arrays.items()
        }
        return FitResult(arrays=out, num_examples=self.examples)

    def evaluate(self, arrays: dict[str, NDArray[Any]], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=self.examples)


def initial_arrays(seed: int = 0) -> dict[str, NDArray[Any]]:
    """A tiny stand-in (``fedtee init`` writes it; :func:`run_silo` replaces it)."""
    del seed
    return layered_model(4096)


def layered_model(total_bytes: int, *, tensor_bytes: int = TENSOR_BYTES) -> dict[str, Any]:
    """About ``total_bytes`` of float32 in tensors of ``tensor_bytes``; tensor i holds i."""
    count = max(1, total_bytes // tensor_bytes)
    each = max(1, min(total_bytes, tensor_bytes) // 4)
    return {f"layer{i:04d}.weight": np.full(each, i, dtype=np.float32) for i in range(count)}


@dataclass(kw_only=True)
class SiloRun:
    model_bytes: int
    clients: int
    server_peak: int = 0  # bytes
    client_peaks: list[int] = field(default_factory=list)  # bytes
    # per client id: event kind -> seconds since the run started (first occurrence)
    events: dict[str, dict[str, float]] = field(default_factory=dict)
    state_dir: Path = Path()
    wall_s: float = 0.0

    def phase_s(self, client: str, start: str, end: str) -> float:
        marks = self.events.get(client, {})
        return marks[end] - marks[start] if start in marks and end in marks else float("nan")


def _pump(
    stream: IO[bytes], log: IO[bytes], events: dict[str, dict[str, float]], t0: float
) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        match = _EVENT.match(raw.decode(errors="replace"))
        if match is not None:
            events.setdefault(match["client"], {}).setdefault(match["kind"], time.monotonic() - t0)
    log.flush()


def _peak(log: Path) -> int:
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "peak-rss-kib" in ln]
    if not lines:
        raise RuntimeError(f"no peak reported in {log}: {log.read_text()[-2000:]}")
    return int(lines[-1].split()[-1]) * 1024


def run_silo(
    workdir: Path,
    *,
    model_bytes: int,
    clients: int = 2,
    rounds: int = 1,
    timeout_s: float = 1200.0,
) -> SiloRun:
    """One federation of ``clients`` processes for ``rounds`` rounds on a model of about
    ``model_bytes``; raises RuntimeError (with the log's tail) when something fails."""
    from fedtee.cli.init import InitOptions, client_toml, init_federation

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    opts = InitOptions(
        directory=workdir,
        federation_id=FEDERATION,
        with_sim=True,
        port=port,
        rounds=rounds,
        clients_per_round=clients,
        min_clients=clients,
        trainer=TRAINER,
        force=True,
    )
    init_federation(opts)
    with (workdir / "initial-model.safetensors").open("wb") as fh:
        for chunk in tensors.encode_stream(layered_model(model_bytes)).chunks(MiB):
            fh.write(chunk)
    server_toml = workdir / "server.toml"
    server_toml.write_text(
        server_toml.read_text()
        .replace("round_timeout_s = 60", f"round_timeout_s = {int(timeout_s)}")
        .replace("start_wait_s = 10", "start_wait_s = 600")
    )
    configs = []
    for k in range(clients):
        path = workdir / f"client-{k}.toml"
        path.write_text(client_toml(opts, client_id=f"client-{k}", partition=k))
        configs.append(path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = SiloRun(model_bytes=model_bytes, clients=clients, state_dir=workdir / "state")
    t0 = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    pumps: list[threading.Thread] = []
    logs: list[IO[bytes]] = []

    def spawn(*args: str, log: str) -> subprocess.Popen[bytes]:
        out = (workdir / log).open("wb")
        logs.append(out)
        cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "fedtee.cli.main", *args]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir, env=env
        )
        assert proc.stdout is not None
        pump = threading.Thread(target=_pump, args=(proc.stdout, out, run.events, t0))
        pump.start()
        pumps.append(pump)
        procs.append(proc)
        return proc

    try:
        server = spawn("server", "start", "--config", server_toml.name, log="server.log")
        wait_for_port(port, server, timeout_s=120)
        workers = [
            spawn("client", "start", "--config", c.name, log=f"{c.stem}.log") for c in configs
        ]
        for k, proc in enumerate(workers):
            code = proc.wait(timeout=max(1.0, t0 + timeout_s - time.monotonic()))
            if code != 0:
                raise RuntimeError(
                    f"client-{k} exited with {code}: "
                    + (workdir / f"client-{k}.log").read_text(errors="replace")[-2000:]
                )
        server.terminate()  # it keeps serving after the last round, as a server does
        server.wait(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pump in pumps:
            pump.join(timeout=10)
        for log in logs:
            log.close()
    run.wall_s = time.monotonic() - t0
    run.server_peak = _peak(workdir / "server.log")
    run.client_peaks = [_peak(workdir / f"{c.stem}.log") for c in configs]
    return run


__all__ = ["TRAINER", "ShiftTrainer", "SiloRun", "initial_arrays", "layered_model", "run_silo"]
