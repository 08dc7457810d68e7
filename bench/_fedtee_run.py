"""Run one real fedtee federation on loopback for the benchmarks, and measure it.

``run_federation(clients=N, params=P, rounds=R, workdir=...)`` does what an operator does:
``fedtee init --with-sim`` (CA, TLS certificate, sim root, a policy that accepts exactly
bench/noise_trainer.py), an initial model of P float32 parameters, then ``fedtee server start``
and N ``fedtee client start`` processes, each its own Python process talking TLS gRPC on
127.0.0.1. Attestation (sim TEE), receipts and the ledger are on, as in production; with
``trust=False`` the server runs through bench/_serve_untrusted.py, which turns them off
(measurement only; see bench_trust_cost.py).

Round times come from the server's own state (``closed_ms`` of each round in state.db):
round r's time is ``closed(r) - closed(r-1)`` (round 1: ``closed(1) - opened(1)``), i.e. all
the framework's work between two aggregated models, polling included. Memory is sampled from
/proc for the server's process tree and for each client's (bench/_common.TreeSampler).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common

from fedtee import tensors
from fedtee.cli.init import InitOptions, client_toml, init_federation
from fedtee.localnet import free_port, wait_for_port

BENCH = Path(__file__).resolve().parent
TRAINER = "noise_trainer:NoiseTrainer"


@dataclass(kw_only=True)
class FederationRun:
    clients: int
    params: int
    rounds: int
    trust: bool
    round_s: list[float] = field(default_factory=list)
    server_peak: int = 0  # bytes, sampled sum of VmRSS over the server's process tree
    client_peaks: list[int] = field(default_factory=list)  # bytes, per client tree
    wall_s: float = 0.0
    ok: bool = False
    error: str = ""

    @property
    def median_round_s(self) -> float:
        later = self.round_s[1:] or self.round_s
        return _common.median(later) if later else float("nan")

    @property
    def client_peak(self) -> int:
        return max(self.client_peaks, default=0)


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(BENCH) + (os.pathsep + path if path else ""),
    }


def _cli(*args: str, profile: Path | None = None) -> list[str]:
    """The fedtee command; under cProfile (output to ``profile``) when one is given."""
    if profile is not None:
        prof = [sys.executable, "-m", "cProfile", "-o", str(profile)]
        return [*prof, "-m", "fedtee.cli.main", *args]
    return [sys.executable, "-m", "fedtee.cli.main", *args]


def prepare(
    workdir: Path, *, clients: int, params: int, rounds: int
) -> tuple[Path, list[Path], int]:
    """Write the federation's files; return (server.toml, client tomls, port)."""
    port = free_port()
    opts = InitOptions(
        directory=workdir,
        federation_id="bench",
        with_sim=True,
        port=port,
        rounds=rounds,
        clients_per_round=clients,
        min_clients=clients,
        trainer=TRAINER,
        force=True,
    )
    init_federation(opts)
    import noise_trainer

    (workdir / "initial-model.safetensors").write_bytes(
        tensors.encode(noise_trainer.initial_arrays(0, params))
    )
    server_toml = workdir / "server.toml"
    text = server_toml.read_text()
    text = text.replace("round_timeout_s = 60", "round_timeout_s = 900").replace(
        "start_wait_s = 10", "start_wait_s = 600"
    )
    server_toml.write_text(text)
    configs = []
    for k in range(clients):
        path = workdir / f"client-{k + 1}.toml"
        path.write_text(client_toml(opts, client_id=f"client-{k + 1}", partition=k))
        configs.append(path)
    return server_toml, configs, port


def _round_times(state_dir: Path) -> list[float]:
    from fedtee.server.store import RoundStatus, StateStore

    store = StateStore.open(str(state_dir / "state.db"))
    try:
        rounds = sorted(
            (r for r in store.rounds("bench") if r.status is RoundStatus.COMPLETED),
            key=lambda r: r.number,
        )
    finally:
        store.close()
    out: list[float] = []
    prev: int | None = None
    for r in rounds:
        assert r.closed_ms is not None
        start = r.opened_ms if prev is None else prev
        out.append((r.closed_ms - start) / 1000.0)
        prev = r.closed_ms
    return out


def run_federation(
    workdir: Path,
    *,
    clients: int,
    params: int,
    rounds: int,
    trust: bool = True,
    timeout_s: float = 1800.0,
    interval: float = 0.1,
) -> FederationRun:
    """One whole federation; never raises for a failed run (``ok`` and ``error`` say)."""
    run = FederationRun(clients=clients, params=params, rounds=rounds, trust=trust)
    workdir.mkdir(parents=True, exist_ok=True)
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    server_toml, configs, port = prepare(workdir, clients=clients, params=params, rounds=rounds)
    env = _env()
    # FEDTEE_BENCH_PROFILE=DIR: run the server and every client under cProfile (slower),
    # writing DIR/server.prof and DIR/client-K.prof, to find where a round's time goes.
    prof_env = os.environ.get("FEDTEE_BENCH_PROFILE")
    prof_dir = Path(prof_env) if prof_env else None
    if prof_dir is not None:
        prof_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    sampler = _common.TreeSampler(interval=interval)
    try:
        with (logs / "server.log").open("wb") as log:
            server = subprocess.Popen(
                _cli(
                    "server",
                    "start",
                    "--config",
                    str(server_toml),
                    profile=prof_dir / "server.prof" if prof_dir else None,
                )
                if trust
                else [
                    sys.executable,
                    str(BENCH / "_serve_untrusted.py"),
                    "server",
                    "start",
                    "--config",
                    str(server_toml),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                env=env,
            )
        sampler.add(server.pid)
        sampler.start()
        wait_for_port(port, server, timeout_s=120)
        for k, config in enumerate(configs):
            with (logs / f"client-{k + 1}.log").open("wb") as log:
                proc = subprocess.Popen(
                    _cli(
                        "client",
                        "start",
                        "--config",
                        str(config),
                        profile=prof_dir / f"client-{k + 1}.prof" if prof_dir else None,
                    ),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=workdir,
                    env=env,
                )
            procs.append(proc)
            sampler.add(proc.pid)
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if all(p.poll() is not None for p in procs):
                break
            if server.poll() is not None:
                raise RuntimeError(f"server exited with code {server.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"timed out after {timeout_s:.0f}s")
        bad = [p.returncode for p in procs if p.returncode != 0]
        if bad:
            raise RuntimeError(f"{len(bad)} client(s) failed, exit codes {sorted(set(bad))}")
        run.ok = True
    except RuntimeError as exc:
        run.error = str(exc)
    finally:
        sampler.stop()
        for p in procs:
            _stop(p)
        if "server" in locals():
            _stop(server)
    run.wall_s = time.monotonic() - started
    run.server_peak = sampler.peak_by_root.get(server.pid, 0) if "server" in locals() else 0
    run.client_peaks = [sampler.peak_by_root.get(p.pid, 0) for p in procs]
    try:
        run.round_s = _round_times(workdir / "state")
    except Exception as exc:  # a run that failed early may have no state at all
        run.error = run.error or f"no round times: {exc}"
    if run.ok and len(run.round_s) != rounds:
        run.ok = False
        run.error = f"{len(run.round_s)} of {rounds} rounds completed"
    return run
