"""IoT-profile clients in real processes, measured: peak memory, imports and bytes sent.

:func:`run_iot_round` does what an operator of a small device does: ``fedtee init --with-sim``
with the IoT example trainer (:mod:`fedtee.client.examples.iot`, 100,060 parameters), then
``fedtee server start`` and one ``fedtee client start --profile iot`` process on loopback TLS
gRPC (attestation, receipts and ledger on) for one round. The client runs with
``FEDTEE_CLIENT_REPORT`` set, so at exit it writes the top-level modules it loaded and its
peak resident set (``VmHWM``); optionally it runs under a hard limit, which it must complete
within: address space (``prlimit --as``, no privilege needed) or resident memory (a memory
cgroup made under this process's own, :func:`memory_cgroup`; needs root and cgroup v1).
:func:`run_idle_client` measures an enrolled client that is only waiting for work.

Used by ``tests/integration/test_iot_profile.py`` and ``bench/bench_iot.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fedtee.errors import ConfigError
from fedtee.localnet import free_port, wait_for_port

FEDERATION = "iot"
TRAINER = "fedtee.client.examples.iot:IotTrainer"
REPORT_ENV = "FEDTEE_CLIENT_REPORT"  # fedtee.cli.client.REPORT_ENV (not imported: no CLI here)
KiB = 1024
MiB = 1 << 20
# Under an address-space limit, also cap the stack: glibc reserves a thread's stack at the
# stack limit (8 MiB by default), and gRPC grows its thread pool when the machine is busy,
# so with 8 MiB stacks the address space needed varies with the load, not with fedtee.
THREAD_STACK = 2 * MiB


@dataclass(kw_only=True)
class IotRun:
    encoding: str
    returncode: int = -1
    peak_rss: int = 0  # bytes (VmHWM of the client process)
    peak_address_space: int = 0  # bytes (VmPeak: what an address-space limit counts)
    modules: list[str] = field(default_factory=list)  # top-level modules it loaded
    update_bytes: int = 0  # the encoded update as sent (and digested, and signed)
    model_bytes: int = 0  # the global model it downloaded
    accepted: bool = False
    cgroup_peak: int = 0  # bytes charged to the memory cgroup at most (RSS + page cache)
    # (stage, peak resident set in bytes after it, resident set in bytes then), in order
    stages: list[tuple[str, int, int]] = field(default_factory=list)
    resident: dict[str, int] = field(default_factory=dict)  # bytes per mapping at exit
    wall_s: float = 0.0
    log: str = ""


def _federation(workdir: Path, *, clients_per_round: int) -> tuple[Path, Path, int]:
    from fedtee.cli.init import InitOptions, client_toml, init_federation

    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    opts = InitOptions(
        directory=workdir,
        federation_id=FEDERATION,
        with_sim=True,
        port=port,
        rounds=1,
        clients_per_round=clients_per_round,
        min_clients=clients_per_round,
        trainer=TRAINER,
        force=True,
    )
    init_federation(opts)
    server = workdir / "server.toml"
    server.write_text(
        server.read_text()
        .replace('lr = "0.5"', 'lr = "0.05"')
        .replace('local_epochs = "5"', 'local_epochs = "1"')
        .replace("start_wait_s = 10", "start_wait_s = 600")
    )
    client = workdir / "client-0.toml"
    client.write_text(client_toml(opts, client_id="device-0", partition=0))
    return server, client, port


def _set_runtime(client: Path, **keys: str) -> None:
    """Drop init's explicit chunk_bytes (the profile picks it) and add ``keys``."""
    lines = [ln for ln in client.read_text().splitlines() if not ln.startswith("chunk_bytes")]
    at = lines.index("[runtime]") + 1
    for key, value in keys.items():
        lines.insert(at, f'{key} = "{value}"')
    client.write_text("\n".join(lines) + "\n")


def _start_server(workdir: Path, server: Path, port: int) -> subprocess.Popen[bytes]:
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedtee.cli.main", "server", "start", "--config", server.name],
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        wait_for_port(port, proc, timeout_s=120)
    except ConfigError as exc:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log_tail = (workdir / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{exc}: {log_tail}") from exc
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_command(config: Path, *, address_space: int | None = None) -> list[str]:
    """``fedtee client start --profile iot``, under ``prlimit --as`` (and a 2 MiB stack
    limit, :data:`THREAD_STACK`) when a limit is given."""
    cmd = [sys.executable, "-m", "fedtee.cli.main", "client", "start"]
    cmd += ["--config", config.name, "--profile", "iot"]
    if address_space is None:
        return cmd
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise RuntimeError("prlimit (util-linux) is needed for a hard memory limit")
    return [prlimit, f"--as={address_space}", f"--stack={THREAD_STACK}", "--", *cmd]


def client_env(report: Path) -> dict[str, str]:
    # One malloc arena: each thread's arena would reserve 64 MiB of address space (not of
    # memory), which an address-space limit counts. gRPC's threads make several.
    # One BLAS thread: each OpenBLAS thread reserves its own buffer (address space again),
    # and a device's training step is too small to gain from threads.
    return {
        **os.environ,
        REPORT_ENV: str(report),
        "MALLOC_ARENA_MAX": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def _own_memory_cgroup() -> Path | None:
    """This process's memory cgroup directory (cgroup v1), if it can be written."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, where = line.split(":", 2)
        if "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory") / where.lstrip("/")
            if (base / "memory.limit_in_bytes").is_file() and os.access(base, os.W_OK):
                return base
    return None


def memory_cgroups_available() -> bool:
    return _own_memory_cgroup() is not None


@contextmanager
def memory_cgroup(limit: int) -> Iterator[Path]:
    """A child memory cgroup of this process's own, holding its members to ``limit`` bytes of
    memory (resident set plus page cache; swap too where the kernel accounts it). Removed on
    exit, once the processes put in it have exited."""
    base = _own_memory_cgroup()
    if base is None:
        raise RuntimeError("no writable memory cgroup (needs root and cgroup v1)")
    child = base / f"fedtee-iot-{os.getpid()}-{limit}"
    child.mkdir()
    try:
        (child / "memory.limit_in_bytes").write_text(str(limit))
        swap = child / "memory.memsw.limit_in_bytes"
        if swap.is_file():
            swap.write_text(str(limit))  # no escaping the limit into swap
        yield child
    finally:
        for _ in range(50):
            try:
                child.rmdir()
                break
            except OSError:
                time.sleep(0.1)  # the last member is still exiting


def run_iot_round(
    workdir: Path,
    *,
    encoding: str = "int8",
    address_space: int | None = None,
    memory_limit: int | None = None,
    timeout_s: float = 300.0,
    env: dict[str, str] | None = None,
) -> IotRun:
    """One round with one IoT client whose updates are ``encoding``; see the module doc.
    ``env``: more environment for the client (over :func:`client_env`'s)."""
    if memory_limit is not None:
        with memory_cgroup(memory_limit) as group:
            run = _round(workdir, encoding, address_space, group, timeout_s, env or {})
            run.cgroup_peak = int((group / "memory.max_usage_in_bytes").read_text())
            return run
    return _round(workdir, encoding, address_space, None, timeout_s, env or {})


def _round(
    workdir: Path,
    encoding: str,
    address_space: int | None,
    group: Path | None,
    timeout_s: float,
    env: dict[str, str],
) -> IotRun:
    server_toml, client_toml, port = _federation(workdir, clients_per_round=1)
    _set_runtime(client_toml, encoding=encoding)
    run = IotRun(encoding=encoding)
    report = workdir / "client-report.json"
    server = _start_server(workdir, server_toml, port)
    t0 = time.monotonic()
    try:
        command = client_command(client_toml, address_space=address_space)
        if group is not None:  # join the cgroup, then become the client
            join = 'echo $$ > "$0" && exec "$@"'
            command = ["sh", "-c", join, str(group / "cgroup.procs"), *command]
        done = subprocess.run(
            command,
            cwd=workdir,
            env={**client_env(report), **env},
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        run.wall_s = time.monotonic() - t0
        run.returncode = done.returncode
        run.log = (done.stdout + done.stderr).decode(errors="replace")
    finally:
        _stop(server)
    if report.is_file():
        data = json.loads(report.read_text())
        run.modules = list(data["modules"])
        run.peak_rss = int(data["vm_hwm_kib"]) * KiB
        run.peak_address_space = int(data["vm_peak_kib"]) * KiB
        run.stages = [
            (str(s["stage"]), int(s["vm_hwm_kib"]) * KiB, int(s["vm_rss_kib"]) * KiB)
            for s in data.get("stages", [])
        ]
        run.resident = {str(k): int(v) * KiB for k, v in data.get("resident_kib", {}).items()}
    _sizes(workdir / "state", run)
    return run


def _sizes(state_dir: Path, run: IotRun) -> None:
    from fedtee.server.store import StateStore

    store = StateStore.open(str(state_dir / "state.db"))
    try:
        rounds = store.rounds(FEDERATION)
        updates = store.updates(FEDERATION, 1) if rounds else []
    finally:
        store.close()
    artifacts = state_dir / "artifacts"
    if rounds:
        run.model_bytes = (
            (artifacts / f"{rounds[0].global_model_digest.hex()}.safetensors").stat().st_size
        )
    if updates:
        run.accepted = True
        run.update_bytes = (
            (artifacts / f"{updates[0].update_digest.hex()}.safetensors").stat().st_size
        )


def run_idle_client(workdir: Path, *, idle_s: float = 3.0, timeout_s: float = 120.0) -> int:
    """Peak resident set (bytes) of an IoT client that enrolled and then only waits: the
    server asks for two clients per round, so with one enrolled no round ever opens."""
    server_toml, client_toml, port = _federation(workdir, clients_per_round=2)
    _set_runtime(client_toml, encoding="int8")
    server = _start_server(workdir, server_toml, port)
    log = (workdir / "idle-client.log").open("wb")
    client = subprocess.Popen(
        client_command(client_toml),
        cwd=workdir,
        env=client_env(workdir / "idle-report.json"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    try:
        deadline = time.monotonic() + timeout_s
        while b"enrolled" not in (workdir / "idle-client.log").read_bytes():
            if client.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "idle client did not enrol: "
                    + (workdir / "idle-client.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        time.sleep(idle_s)  # a few GetTask -> WAIT cycles
        status = Path(f"/proc/{client.pid}/status").read_text()
        return next(
            int(line.split()[1]) * KiB for line in status.splitlines() if line.startswith("VmHWM:")
        )
    finally:
        _stop(client)
        _stop(server)


__all__ = [
    "FEDERATION",
    "TRAINER",
    "IotRun",
    "client_command",
    "client_env",
    "memory_cgroup",
    "memory_cgroups_available",
    "run_idle_client",
    "run_iot_round",
]
