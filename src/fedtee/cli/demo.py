"""``fedtee demo``: a whole attested federation on this machine, with two cheaters.

What it does, in order:

1. ``fedtee init --with-sim`` into a work directory (a temporary one unless ``--workdir``):
   federation CA, server certificate, sim root, and a policy that accepts sim clients only
   when they run the example digits trainer, byte for byte.
2. Starts the server (``fedtee server start``) on a free loopback port, over TLS gRPC.
3. Starts ``--clients`` honest client processes (``fedtee client start``), each holding one
   non-IID share of scikit-learn's digits, and two cheaters:

   - ``cheater-tamper`` runs the honest code but changes its update after signing the
     receipt: the server rejects the update (its digest no longer matches the receipt);
   - ``cheater-modified`` runs :mod:`fedtee.client.examples.digits_modified`: its code
     measurement is not in the policy, so it is rejected at enrolment
     (``measurement_not_allowed``) and never trains.

4. Shows a live display (round, enrolled clients, accepted / rejected updates, global test
   accuracy), prints every rejection with its reason code, then the final accuracy.
5. Verifies the server's ledger offline (``fedtee ledger verify``) and prints the lineage.

Exit code 0 only if the honest federation reached ``--target`` accuracy, every honest client
enrolled, and both cheaters were rejected with their reasons; 1 otherwise.

``--tee sim`` (the default): every result is from the SIMULATED TEE, nothing is
hardware-backed, and the display says so.

``--tee tpm``: every client gets its own software TPM (swtpm, a real TPM 2.0 implementation),
provisioned with an EK certificate from a local EK CA made for this demo (``ek-ca/`` in the
work directory); the server's ``tpm_ek_ca`` trusts that CA explicitly, and its policy lists the
honest trainer's PCR 23 value. Clients extend PCR 23 with their code measurement, prove their
AK is bound to the EK (credential activation) and enrol on a verified TPM quote;
``cheater-modified``'s PCR 23 differs, so it is rejected (``measurement_not_allowed``). Both
directions: the server runs under its own swtpm too (``[server_attestation]``), and every
client verifies its quote against ``server-policy.toml`` (the server code's PCR 23) before it
sends anything. Needs swtpm, swtpm-tools and tpm2-pytss (scripts/setup.sh installs them when
run as root). Every swtpm is stopped at exit, on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fedtee.cli.init import InitOptions, client_toml, init_federation, trainer_measurement
from fedtee.errors import ConfigError, DeviceError, FedteeError, Reason
from fedtee.localnet import free_port, wait_for_port
from fedtee.server.app import StatePaths

HONEST_TRAINER = "fedtee.client.examples.digits:DigitsTrainer"
MODIFIED_TRAINER = "fedtee.client.examples.digits_modified:ModifiedDigitsTrainer"
TAMPER_ID = "cheater-tamper"
MODIFIED_ID = "cheater-modified"
# Reasons that count as "the tampered update was caught" (the digest check is the one that
# fires for a changed byte; the others would mean the receipt itself was touched).
TAMPER_REASONS = frozenset(
    {"update_digest_mismatch", "receipt_signature_invalid", "receipt_malformed"}
)
MODIFIED_REASON = "measurement_not_allowed"
TEES = ("sim", "tpm")
EK_CA_DIR = "ek-ca"  # the demo's local EK CA (swtpm_localca), under the work directory
SERVER_TPM = "aggregator"  # the server's own swtpm (mutual attestation) in the TPM map
SERVER_POLICY = "server-policy.toml"  # what clients require of the server (--tee tpm)


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    rounds: int = 10
    clients: int = 5
    tee: str = "sim"
    workdir: Path | None = None
    seed: int = 0
    target: float = 0.90
    timeout_s: float = 600.0
    round_timeout_s: int = 15
    start_wait_s: int = 2
    live: bool = True


@dataclass(kw_only=True)
class DemoState:
    round: int = 0
    completed_rounds: int = 0
    enrolled: set[str] = field(default_factory=set)
    quarantined: set[str] = field(default_factory=set)
    accepted_updates: int = 0
    rejections: list[tuple[str, str, str]] = field(default_factory=list)  # client, reason, msg
    accuracy: float | None = None
    accuracy_digest: bytes | None = None
    finished: bool = False
    # client id -> (tee, hardware_backed, platform id, code measurement) as the server
    # recorded them at enrolment (only after the evidence verified and the policy accepted it)
    enrolments: dict[str, tuple[str, bool, bytes | None, bytes]] = field(default_factory=dict)


def _python_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedtee.cli.main", *args]


def _spawn(cmd: list[str], log: Path, *, cwd: Path) -> subprocess.Popen[bytes]:
    handle: IO[bytes] = log.open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def client_ids(opts: DemoOptions) -> list[str]:
    """Honest clients first, then the two cheaters."""
    return [*(f"client-{k + 1}" for k in range(opts.clients)), TAMPER_ID, MODIFIED_ID]


def _tpm_tee_table(tpm: Any) -> str:
    """client.toml's [tee] lines for a client on its own swtpm, trusting the demo's EK CA."""
    return (
        'type = "tpm"\n'
        f'tcti = "{tpm.tcti}"   # this client\'s own swtpm\n'
        f'ek_chain = "{EK_CA_DIR}/issuercert.pem"   # the local CA\'s EK-signing intermediate\n'
    )


def _write_client_configs(
    workdir: Path, opts: DemoOptions, init: InitOptions, tpms: dict[str, Any] | None = None
) -> dict[str, Path]:
    """One config per client: honest ones get one data share each; cheaters reuse share 0.
    With ``tpms`` (client id -> running swtpm), each client attests with its own TPM."""
    out: dict[str, Path] = {}
    tpms = tpms or {}
    shares = InitOptions(**{**init.__dict__, "clients_per_round": opts.clients})
    for k, cid in enumerate(client_ids(opts)):
        text = client_toml(
            shares, client_id=cid, partition=k if k < opts.clients else 0, seed=opts.seed
        )
        if cid == MODIFIED_ID:
            text = text.replace(HONEST_TRAINER, MODIFIED_TRAINER)
        if cid in tpms:
            lines = text.splitlines(keepends=True)
            at = next(i for i, line in enumerate(lines) if line.startswith("type = "))
            lines[at] = _tpm_tee_table(tpms[cid])
            text = "".join(lines)
        if SERVER_TPM in tpms:
            text += _client_server_attestation_table()
        out[cid] = workdir / f"{cid}.toml"
        out[cid].write_text(text, encoding="utf-8")
    return out


def _client_server_attestation_table() -> str:
    """client.toml's mutual attestation: verify the server's TPM quote before anything else."""
    return (
        "\n[server_attestation]   # verify the server's TPM quote before sending it anything\n"
        "require = true\n"
        f'policy = "{SERVER_POLICY}"   # the server code\'s PCR 23\n'
        f'tpm_ek_ca = ["{EK_CA_DIR}/swtpm-localca-rootca-cert.pem"]   # the demo\'s EK CA\n'
    )


def _server_attestation_table(tpm: Any) -> str:
    """server.toml's mutual attestation: the server quotes with its own swtpm."""
    return (
        "\n[server_attestation]   # the server attests too, with its own swtpm\n"
        'tee = "tpm"\n'
        f'tcti = "{tpm.tcti}"\n'
        f'ek_chain = "{EK_CA_DIR}/issuercert.pem"\n'
    )


def tpm_policy(measurement: bytes, *, what: str = f"the honest trainer {HONEST_TRAINER}") -> str:
    """A policy that admits TPM clients whose PCR 23 holds ``measurement`` (nothing else)."""
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

    return (
        "# fedtee demo --tee tpm: TPM 2.0 only. The EK must chain to a trusted EK CA (here\n"
        "# the demo's local swtpm EK CA, named in tpm_ek_ca), and PCR 23 must hold the code\n"
        f"# measurement of {what}\n"
        "version = 1\n\n"
        "[tee.tpm]\n"
        'accepted_tcb = ["NotApplicable"]   # TPM quotes carry no TCB level\n\n'
        "[tee.tpm.reference]\n"
        f"# SHA-256 of PCR {CODE_PCR} after reset + one extend with SHA-256(measurement)\n"
        f'pcr{CODE_PCR} = ["{code_pcr_value(measurement).hex()}"]\n'
    )


def _provision_tpms(workdir: Path, ids: list[str], console: Any) -> dict[str, Any]:
    """One provisioned, running swtpm per client, all certified by one local EK CA."""
    from fedtee.attest.swtpm import Swtpm, swtpm_missing

    why = swtpm_missing()
    if why is not None:
        raise DeviceError(
            f"--tee tpm needs swtpm and tpm2-pytss: {why}", reason=Reason.DEVICE_ABSENT
        )
    ca_dir = workdir / EK_CA_DIR
    tpms: dict[str, Any] = {}
    try:
        for cid in ids:
            tpm = Swtpm.provision(workdir / "tpm" / cid, ca_dir=ca_dir)
            tpms[cid] = tpm
            tpm.start()
    except BaseException:
        _stop_tpms(tpms)
        raise
    console.print(
        f"{len(tpms)} swtpm TPMs provisioned (EK certificates from the local CA in {ca_dir}), "
        f"on loopback ports {', '.join(str(t.port) for t in tpms.values())}"
    )
    return tpms


def _stop_tpms(tpms: dict[str, Any]) -> None:
    for tpm in tpms.values():
        tpm.stop()


class _Observer:
    """Reads the running server's state store and artifacts (read-only use) for the display."""

    def __init__(self, *, state_dir: Path, federation_id: str) -> None:
        self.state_dir = state_dir
        self.federation_id = federation_id
        self._store: Any = None
        self._artifacts: Any = None

    def _open(self) -> bool:
        if self._store is not None:
            return True
        paths = StatePaths.of(self.state_dir)
        if not paths.database.exists():
            return False
        from fedtee.server.artifacts import ArtifactStore
        from fedtee.server.store import StateStore

        self._store = StateStore.open(str(paths.database))
        self._artifacts = ArtifactStore(paths.artifacts)
        return True

    def poll(self, state: DemoState) -> list[tuple[str, str, str]]:
        """Refresh ``state``; return rejections not seen before."""
        if not self._open():
            return []
        store = self._store
        fid = self.federation_id
        rounds = store.rounds(fid)
        if rounds:
            state.round = max(r.number for r in rounds)
        done = [r for r in rounds if r.output_model_digest is not None]
        state.completed_rounds = len(done)
        clients = store.list_clients(fid)
        state.enrolled = {c.id for c in clients}
        state.enrolments = {
            c.id: (c.tee, c.hardware_backed, c.platform_id, c.measurement) for c in clients
        }
        state.quarantined = {c.id for c in clients if c.quarantined}
        state.accepted_updates = sum(store.count_updates(fid, r.number) for r in rounds)
        fed = store.get_federation(fid)
        state.finished = fed is not None and fed.status.value == "finished"
        new: list[tuple[str, str, str]] = []
        for rej in store.rejections(fid):
            item = (rej.client_id or "?", rej.reason.value, rej.message)
            if item not in state.rejections:
                state.rejections.append(item)
                new.append(item)
        if done:
            latest = max(done, key=lambda r: r.number).output_model_digest
            if latest != state.accuracy_digest:
                from fedtee.client.examples import digits

                arrays = self._artifacts.load_arrays(latest)
                state.accuracy = digits.global_accuracy(arrays)
                state.accuracy_digest = latest
        return new

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _enrolled(state: DemoState) -> str:
    if not state.quarantined:
        return str(len(state.enrolled))
    return f"{len(state.enrolled)} ({len(state.quarantined)} quarantined)"


def _table(state: DemoState, opts: DemoOptions) -> Any:
    from rich.table import Table

    title = (
        "fedtee demo: TPM 2.0 quotes from swtpm (software TPMs, local EK CA)"
        if opts.tee == "tpm"
        else "fedtee demo: SIMULATED TEE, not hardware-backed"
    )
    table = Table(title=title, title_style="bold")
    table.add_column("round")
    table.add_column("enrolled clients")
    table.add_column("accepted updates")
    table.add_column("rejections")
    table.add_column("global accuracy")
    acc = "-" if state.accuracy is None else f"{state.accuracy:.3f}"
    table.add_row(
        f"{state.round}/{opts.rounds} ({state.completed_rounds} done)",
        _enrolled(state),
        str(state.accepted_updates),
        str(len(state.rejections)),
        acc,
    )
    return table


def _stop(proc: subprocess.Popen[bytes], *, grace_s: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True, kw_only=True)
class DemoOutcome:
    accuracy: float | None
    tamper_rejected: str | None  # the reason, when rejected
    modified_rejected: str | None
    ledger_ok: bool
    rounds_completed: int
    workdir: Path
    honest_enrolled_on: tuple[str, ...] = ()  # honest clients enrolled with the demo's TEE
    honest_clients: int = 0
    mutual: bool = False  # the server attested too (--tee tpm)
    honest_verified_server: tuple[str, ...] = ()  # honest clients that verified the server

    def success(self, target: float) -> bool:
        return (
            len(self.honest_enrolled_on) == self.honest_clients
            and (not self.mutual or len(self.honest_verified_server) == self.honest_clients)
            and self.accuracy is not None
            and self.accuracy >= target
            and self.tamper_rejected is not None
            and self.modified_rejected is not None
            and self.ledger_ok
        )


def run_demo(opts: DemoOptions, *, console: Any) -> DemoOutcome:
    if opts.tee not in TEES:
        raise ConfigError(f"the demo runs on {' or '.join(TEES)} (--tee), not {opts.tee!r}")
    if not 1 <= opts.clients <= 50 or not 1 <= opts.rounds <= 1000:
        raise ConfigError("--clients must be 1..50 and --rounds 1..1000")
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="fedtee-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    tpms: dict[str, Any] = {}
    try:
        if opts.tee == "tpm":
            tpms = _provision_tpms(workdir, [*client_ids(opts), SERVER_TPM], console)
        return _run_federation(opts, workdir, tpms, console)
    finally:
        _stop_tpms(tpms)  # also on Ctrl-C (KeyboardInterrupt) and on errors


def _run_federation(
    opts: DemoOptions, workdir: Path, tpms: dict[str, Any], console: Any
) -> DemoOutcome:
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    port = free_port()
    init = InitOptions(
        directory=workdir,
        federation_id="fedtee-demo",
        with_sim=opts.tee == "sim",
        port=port,
        rounds=opts.rounds,
        # Every enrolled client (the tamperer too, until it is caught) is asked each round.
        clients_per_round=opts.clients + 1,
        min_clients=max(1, opts.clients - 1),
        force=True,
    )
    init_federation(init)
    server_toml = workdir / "server.toml"
    text = server_toml.read_text(encoding="utf-8")
    # Short waits: everyone is on this machine. A round in which the tamperer was asked
    # runs to its deadline (its update never arrives in acceptable form); later rounds,
    # with only honest clients, close as soon as all of them have sent their update.
    text = text.replace("round_timeout_s = 60", f"round_timeout_s = {opts.round_timeout_s}")
    text = text.replace("start_wait_s = 10", f"start_wait_s = {opts.start_wait_s}")
    if tpms:
        text = text.replace(
            "[attestation]\n",
            "[attestation]\n"
            f'tpm_ek_ca = ["{EK_CA_DIR}/swtpm-localca-rootca-cert.pem"]  # the local EK CA\n',
            1,
        )
        (workdir / "policy.toml").write_text(
            tpm_policy(trainer_measurement(HONEST_TRAINER)), encoding="utf-8"
        )
    if SERVER_TPM in tpms:
        from fedtee.server.self_attestation import measure_server

        text += _server_attestation_table(tpms[SERVER_TPM])
        (workdir / SERVER_POLICY).write_text(
            tpm_policy(measure_server(), what="the fedtee server (fedtee server measure)"),
            encoding="utf-8",
        )
    server_toml.write_text(text, encoding="utf-8")
    configs = _write_client_configs(workdir, opts, init, tpms)
    console.print(f"[bold]fedtee demo[/] in {workdir} (server on 127.0.0.1:{port}, TLS)")
    console.print(
        f"{opts.clients} honest clients, {TAMPER_ID} (changes its update after signing), "
        f"{MODIFIED_ID} (runs modified training code)"
    )
    if SERVER_TPM in tpms:
        console.print(
            "mutual attestation: the server quotes with its own swtpm; every client verifies "
            f"that quote against {SERVER_POLICY} before it sends the server anything"
        )

    server = _spawn(
        _python_cli("server", "start", "--config", str(server_toml)),
        logs / "server.log",
        cwd=workdir,
    )
    clients: dict[str, subprocess.Popen[bytes]] = {}
    observer = _Observer(state_dir=workdir / "state", federation_id=init.federation_id)
    state = DemoState()
    try:
        wait_for_port(port, server, timeout_s=60)
        for cid, config in configs.items():
            clients[cid] = _spawn(
                _python_cli(
                    "client",
                    "start",
                    "--config",
                    str(config),
                    *(["--cheat", "tamper-update"] if cid == TAMPER_ID else []),
                ),
                logs / f"{cid}.log",
                cwd=workdir,
            )
        _watch(opts, state, observer, server, clients, console)
    finally:
        for proc in clients.values():
            _stop(proc)
        if server.poll() is None:
            observer.poll(state)  # last look before the server goes away
        _stop(server)
        observer.close()

    tamper = next(
        (r for c, r, _ in state.rejections if c == TAMPER_ID and r in TAMPER_REASONS), None
    )
    modified = next((r for c, r, _ in state.rejections if c == MODIFIED_ID), None)
    honest_rejected = [(c, r) for c, r, _ in state.rejections if c not in (TAMPER_ID, MODIFIED_ID)]
    if honest_rejected:
        console.print(f"[red]honest clients were rejected: {honest_rejected}[/]")
    mutual = SERVER_TPM in tpms
    server_checks = _server_checks(logs, client_ids(opts)) if mutual else {}
    if any("measurement_not_allowed" in v for v in server_checks.values()):
        console.print(
            f"[red]clients refused the server: its PCR 23 is not the one in {SERVER_POLICY}.[/] "
            "The server's measurement covers every .py file of the installed fedtee package "
            "(fedtee server measure); a file changed between writing the policy and the "
            "server's start."
        )
    _enrolment_table(state, opts, console, server_checks)
    ledger_ok = _verify_ledger(workdir, console)
    honest = client_ids(opts)[: opts.clients]
    outcome = DemoOutcome(
        accuracy=state.accuracy,
        tamper_rejected=tamper,
        modified_rejected=modified if modified == MODIFIED_REASON else None,
        ledger_ok=ledger_ok,
        rounds_completed=state.completed_rounds,
        workdir=workdir,
        honest_enrolled_on=tuple(
            sorted(c for c in honest if state.enrolments.get(c, ("",))[0] == opts.tee)
        ),
        honest_clients=opts.clients,
        mutual=mutual,
        honest_verified_server=tuple(
            sorted(c for c in honest if server_checks.get(c, "").startswith("tpm TEE"))
        ),
    )
    _summary(outcome, opts, console)
    return outcome


def _server_checks(logs: Path, ids: list[str]) -> dict[str, str]:
    """What each client concluded about the server (mutual attestation), from its log:
    the ``server_attested`` detail (e.g. "tpm TEE; affirming"), or "refused: REASON"."""
    out: dict[str, str] = {}
    for cid in ids:
        try:
            with (logs / f"{cid}.log").open("rb") as fh:
                head = fh.read(256 * 1024).decode("utf-8", errors="replace")
        except OSError:
            continue
        for line in head.splitlines():
            if line.startswith(f"[{cid}] server_attested "):
                out[cid] = line.removeprefix(f"[{cid}] server_attested ").strip()
                break
            if line.startswith(f"[{cid}] server_refused "):
                out[cid] = "refused: " + line.removeprefix(f"[{cid}] server_refused ").strip()
                break
    return out


def _enrolment_table(
    state: DemoState, opts: DemoOptions, console: Any, server_checks: dict[str, str]
) -> None:
    """Who enrolled, on what evidence, as the server recorded it after verification; with
    mutual attestation, also what each client concluded about the server."""
    from rich.table import Table

    what = "verified TPM 2.0 quote" if opts.tee == "tpm" else "SIMULATED evidence"
    table = Table(title=f"enrolments (each on a {what}, appraised against the policy)")
    table.add_column("client")
    table.add_column("TEE")
    table.add_column("platform (EK SHA-256)" if opts.tee == "tpm" else "platform")
    table.add_column("code (PCR 23)" if opts.tee == "tpm" else "code measurement")
    if server_checks:
        table.add_column("verified the server")
    for cid in client_ids(opts):
        record = state.enrolments.get(cid)
        extra = [server_checks.get(cid, "-")] if server_checks else []
        if record is None:
            table.add_row(cid, "-", "not enrolled", "-", *extra)
            continue
        tee, hardware, platform, measurement = record
        label = tee if hardware else f"{tee} (SIMULATED)"
        platform_hex = platform.hex()[:16] + "..." if platform else "-"
        table.add_row(cid, label, platform_hex, measurement.hex()[:16] + "...", *extra)
    console.print(table)


def _status_line(state: DemoState, opts: DemoOptions) -> str:
    acc = "-" if state.accuracy is None else f"{state.accuracy:.3f}"
    return (
        f"round {state.round}/{opts.rounds} ({state.completed_rounds} done), "
        f"{_enrolled(state)} enrolled, {state.accepted_updates} updates accepted, "
        f"{len(state.rejections)} rejections, global accuracy {acc}"
    )


def _watch(
    opts: DemoOptions,
    state: DemoState,
    observer: _Observer,
    server: subprocess.Popen[bytes],
    clients: dict[str, subprocess.Popen[bytes]],
    console: Any,
) -> None:
    from rich.live import Live

    start = time.monotonic()
    deadline = start + opts.timeout_s
    honest = [c for c in clients if c not in (TAMPER_ID, MODIFIED_ID)]
    live = Live(_table(state, opts), console=console, refresh_per_second=4) if opts.live else None
    last_line = ""
    if live is not None:
        live.start()
    try:
        while True:
            for client_id, reason, message in observer.poll(state):
                text = message.removeprefix(f"{reason}: ").removeprefix(f"[{reason}] ")
                console.print(f"[red]REJECTED[/] {client_id}: [bold]{reason}[/] {text}")
            if live is not None:
                live.update(_table(state, opts))
            else:
                line = _status_line(state, opts)
                if line != last_line:  # plain output: one line per change
                    last_line = line
                    console.print(f"[{time.monotonic() - start:5.1f}s] {line}", markup=False)
            if state.finished or state.completed_rounds >= opts.rounds:
                break
            if server.poll() is not None:
                console.print(f"[red]the server exited with code {server.returncode}[/]")
                break
            if all(clients[c].poll() is not None for c in honest):
                observer.poll(state)
                console.print("[red]all honest clients exited before the federation finished[/]")
                break
            if time.monotonic() > deadline:
                console.print(f"[red]the demo timed out after {opts.timeout_s:.0f}s[/]")
                break
            time.sleep(0.25)
    finally:
        if live is not None:
            live.update(_table(state, opts))
            live.stop()
            console.print()
    # Let honest clients hear FINISHED and exit on their own (they ask every retry_after).
    end = time.monotonic() + 5
    while time.monotonic() < end and any(clients[c].poll() is None for c in honest):
        time.sleep(0.1)


def _verify_ledger(workdir: Path, console: Any) -> bool:
    paths = StatePaths.of(workdir / "state")
    if not paths.ledger.exists():
        console.print("[red]no ledger was written[/]")
        return False
    console.rule("ledger verification (fedtee ledger verify)")
    cmd = _python_cli("ledger", "verify", str(paths.ledger), "--server-key", str(paths.server_key))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    console.print(done.stdout.rstrip() or done.stderr.rstrip(), markup=False, highlight=False)
    return done.returncode == 0


def _summary(outcome: DemoOutcome, opts: DemoOptions, console: Any) -> None:
    console.rule("result")
    acc = "none" if outcome.accuracy is None else f"{outcome.accuracy:.3f}"
    ok = outcome.accuracy is not None and outcome.accuracy >= opts.target
    console.print(
        f"honest federation: {outcome.rounds_completed} rounds, global accuracy {acc} "
        f"({'meets' if ok else 'MISSES'} the target {opts.target:.2f})"
    )
    for who, reason, expected in (
        (TAMPER_ID, outcome.tamper_rejected, "its update's digest"),
        (MODIFIED_ID, outcome.modified_rejected, MODIFIED_REASON),
    ):
        verdict = f"rejected: {reason}" if reason else f"NOT rejected (expected {expected})"
        console.print(f"{who}: {verdict}")
    enrolled = len(outcome.honest_enrolled_on)
    evidence = "a verified TPM quote" if opts.tee == "tpm" else "simulated evidence"
    console.print(f"honest clients enrolled on {evidence}: {enrolled} of {outcome.honest_clients}")
    if outcome.mutual:
        console.print(
            "server attested to honest clients (its own swtpm quote, PCR 23 = the server's "
            f"code, verified before they sent anything): {len(outcome.honest_verified_server)} "
            f"of {outcome.honest_clients}"
        )
    console.print(f"ledger: {'verifies' if outcome.ledger_ok else 'DOES NOT VERIFY'}")
    if opts.tee == "tpm":
        console.print(
            "TPM quotes verified against the demo's local swtpm EK CA: real TPM 2.0 protocol, "
            "but software TPMs (their keys are in files, not hardware)"
        )
    else:
        console.print("all attestation results above are SIMULATED (not hardware-backed)")


def _raise_interrupt(signum: int, frame: Any) -> None:
    del signum, frame
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    opts = DemoOptions(
        rounds=args.rounds,
        clients=args.clients,
        tee=args.tee,
        workdir=Path(args.workdir) if args.workdir else None,
        seed=args.seed,
        target=args.target,
        timeout_s=args.timeout,
        round_timeout_s=args.round_timeout,
        live=not args.no_live,
    )
    console = Console()
    # SIGTERM unwinds like Ctrl-C, so every process the demo started (server, clients,
    # swtpms) is stopped by the finally blocks on the way out.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        outcome = run_demo(opts, console=console)
    except FedteeError as exc:
        console.print(f"[red]demo failed:[/] {exc}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if opts.workdir is None:
        if args.keep:
            console.print(f"files, state and logs kept in {outcome.workdir}")
        else:
            shutil.rmtree(outcome.workdir, ignore_errors=True)
    return 0 if outcome.success(opts.target) else 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a whole attested federation on this machine, with two cheating clients",
        description=sys.modules[__name__].__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=10, help="training rounds (default 10)")
    parser.add_argument(
        "--clients", type=int, default=5, help="honest client processes (default 5)"
    )
    parser.add_argument(
        "--tee",
        default="sim",
        choices=TEES,
        help="sim: the simulated TEE (default); tpm: one swtpm per client, provisioned with an "
        "EK certificate from a local EK CA the server trusts, so every client enrols on a real "
        "TPM 2.0 quote (needs swtpm, swtpm-tools and tpm2-pytss: scripts/setup.sh as root)",
    )
    parser.add_argument(
        "--workdir",
        default=None,
        metavar="DIR",
        help="where to put the federation's files, state and logs (default: a new temp dir)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the non-IID data split")
    parser.add_argument(
        "--target", type=float, default=0.90, help="accuracy the honest federation must reach"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many seconds"
    )
    parser.add_argument(
        "--round-timeout",
        type=int,
        default=15,
        metavar="S",
        help="round deadline in seconds (a round the tamperer was asked to join lasts this long)",
    )
    parser.add_argument(
        "--no-live", action="store_true", help="no live display (plain output, e.g. for logs)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary work directory afterwards"
    )
    parser.set_defaults(handler=_run)


__all__ = ["DemoOptions", "DemoOutcome", "register", "run_demo"]
