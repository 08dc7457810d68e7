"""1,000 concurrent clients over real TLS gRPC against one server process.

One ``fedtee server start`` process (SQLite state, ledger, sim attestation policy, the
example trainer's 650-parameter model) and one load-generator process
(:mod:`fedtee.eval.loadgen`: asyncio, ``grpc.aio``) in which every virtual client has its own
identity key and sim platform, gets a challenge, enrols with evidence bound to its key,
downloads each round's model and submits a signed receipt and an update. Every client is
selected in every round (``clients_per_round`` = ``min_clients`` = N), so a round completes
only when all N updates were accepted.

Reported per N: errors (calls that failed for good), retries (calls the server shed and the
client retried), enrolment time and rate (start of the load to the last credential), round
time (opened to aggregated, from the server's state.db), the server's peak RSS (sampled from
/proc; its idle RSS before the load for comparison) and whether ``fedtee ledger verify``'s
checks pass on the result. Both processes share this machine's cores, so the figures are a
lower bound for a server with a machine of its own.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as common
from _fedtee_run import _cli, _env, _round_times, _stop

from fedtee.attest.attesters.sim import SimRoot
from fedtee.cli.init import DEFAULT_TRAINER, InitOptions, init_federation, trainer_measurement
from fedtee.eval.loadgen import LoadOptions, LoadTarget, run_load
from fedtee.ledger.log import verify_ledger
from fedtee.localnet import free_port, wait_for_port

FED = "bench"  # _fedtee_run._round_times reads this federation's rounds


def _configure(path: Path, values: dict[str, Any]) -> None:
    lines = path.read_text().splitlines()
    for key, value in values.items():
        index = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
        if len(index) != 1:
            raise RuntimeError(f"server.toml has {len(index)} lines for {key}")
        lines[index[0]] = f"{key} = {value}"
    path.write_text("\n".join(lines) + "\n")


def _add_to_rounds(path: Path, line: str) -> None:
    text = path.read_text()
    path.write_text(text.replace("[rounds]\n", f"[rounds]\n{line}\n", 1))


def run_one(
    workdir: Path,
    *,
    clients: int,
    rounds: int,
    channels: int,
    timeout_s: float = 1800,
    max_enrolling: int = 0,
    retry_after_s: float = 0.5,
    credential_ttl_s: float = 600.0,
) -> dict[str, Any]:
    """One federation of ``clients`` virtual clients for ``rounds`` rounds; one result row."""
    port = free_port()
    init_federation(
        InitOptions(
            directory=workdir,
            federation_id=FED,
            with_sim=True,
            port=port,
            rounds=rounds,
            clients_per_round=clients,
            min_clients=clients,
            force=True,
        )
    )
    _configure(
        workdir / "server.toml",
        {
            "round_timeout_s": float(timeout_s),
            "start_wait_s": float(timeout_s),
            "credential_ttl_s": float(credential_ttl_s),
        },
    )
    _add_to_rounds(workdir / "server.toml", f"retry_after_s = {retry_after_s}")
    target = LoadTarget(
        address=f"127.0.0.1:{port}",
        ca_pem=(workdir / "ca.pem").read_bytes(),
        sim_root=SimRoot.from_pem(
            (workdir / "sim-root.pem").read_bytes(), (workdir / "sim-root.key").read_bytes()
        ),
        measurement=trainer_measurement(DEFAULT_TRAINER),
    )
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        _cli("server", "start", "--config", str(workdir / "server.toml")),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
        env=_env(),
    )
    sampler = common.TreeSampler(server.pid, interval=0.2)
    try:
        wait_for_port(port, server, timeout_s=120)
        time.sleep(0.5)
        idle = common.rss_bytes(server.pid)
        sampler.start()
        report = asyncio.run(
            asyncio.wait_for(
                run_load(
                    target,
                    LoadOptions(
                        clients=clients,
                        channels=channels,
                        max_enrolling=max_enrolling,
                        # Rounds need all N updates: one failed client means no round
                        # can finish, so stop there and report it instead of timing out.
                        abort_on_error=True,
                        # A server shedding load (RESOURCE_EXHAUSTED past its concurrent-call
                        # limit) is asked again for up to ~10 minutes, not the default ~45 s:
                        # at 10,000 clients it sheds for minutes at a time.
                        max_attempts=160,
                        backoff_max_s=5.0,
                    ),
                ),
                timeout_s,
            )
        )
        sampler.stop()
    finally:
        sampler.stop()
        _stop(server)
        log.close()
    round_s = _round_times(workdir / "state")
    try:
        ledger = verify_ledger(
            (workdir / "state" / "ledger.jsonl").read_bytes(), server_public_key=None
        )
        ledger_ok = len(ledger.lineage) == rounds and all(
            len(r.contributions) == clients for r in ledger.lineage
        )
    except Exception as exc:  # a broken ledger is a result to report, not a crash
        print(f"ledger verification failed: {exc}", file=sys.stderr)
        ledger_ok = False
    return {
        "clients": clients,
        "rounds": rounds,
        "channels": channels or clients,
        "max_enrolling": max_enrolling or clients,
        "retry_after_s": retry_after_s,
        "credential_ttl_s": credential_ttl_s,
        "enrolled": report.enrolled,
        "accepted_updates": report.accepted_updates,
        "rejected_updates": report.rejected_updates,
        "errors": report.errors,
        "error_reasons": ", ".join(f"{k}={v}" for k, v in sorted(report.error_reasons.items())),
        "retries": report.retries,
        "retry_kinds": ", ".join(f"{k}={v}" for k, v in sorted(report.retry_kinds.items())),
        "enrol_s": round(report.enrol_wall_s, 2),
        "enrol_per_s": round(report.enrolled / report.enrol_wall_s, 1)
        if report.enrol_wall_s
        else 0,
        "enrol_p50_ms": round(report.enrol_latency_s[0] * 1000, 1),
        "enrol_p95_ms": round(report.enrol_latency_s[1] * 1000, 1),
        "round_s_median": round(common.median(round_s), 2) if round_s else float("nan"),
        "rounds_completed": len(round_s),
        "submit_p95_ms": round(report.submit_latency_s[1] * 1000, 1),
        "server_idle_rss_mib": round(idle / 2**20, 1),
        "server_peak_rss_mib": round(sampler.peak_by_root.get(server.pid, 0) / 2**20, 1),
        "loadgen_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(report.wall_s, 1),
        "ledger_ok": ledger_ok,
    }


def rows_table(rows: list[dict[str, Any]]) -> str:
    return common.table(
        [
            "clients",
            "TLS connections",
            "errors",
            "retries",
            "enrolment (s)",
            "enrolments/s",
            "enrol p50/p95 (ms)",
            "round (s, median)",
            "rounds done",
            "server RSS idle → peak (MiB)",
            "load generator peak (MiB)",
            "ledger verifies",
        ],
        (
            [
                r["clients"],
                r["channels"],
                r["errors"] if not r["error_reasons"] else f"{r['errors']} ({r['error_reasons']})",
                r["retries"],
                r["enrol_s"],
                r["enrol_per_s"],
                f"{r['enrol_p50_ms']} / {r['enrol_p95_ms']}",
                r["round_s_median"],
                f"{r['rounds_completed']}/{r['rounds']}",
                f"{r['server_idle_rss_mib']} → {r['server_peak_rss_mib']}",
                r["loadgen_peak_rss_mib"],
                "yes" if r["ledger_ok"] else "NO",
            ]
            for r in rows
        ),
        align="rrrrrrrrrrrl",
    )


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=None,
        help="federation sizes to run (default 100 1000; --quick: 50 200)",
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds per run (default 3; quick 2)")
    p.add_argument(
        "--timeout", type=float, default=900.0, help="give up on a run after this many seconds"
    )
    args = p.parse_args()
    sizes = args.clients or ([50, 200] if args.quick else [100, 1000])
    rounds = args.rounds or (2 if args.quick else 3)
    info = common.machine_info()
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"fedtee-load-{n}-") as tmp:
            row = run_one(Path(tmp), clients=n, rounds=rounds, channels=0, timeout_s=args.timeout)
        rows.append(row)
        print(f"{n} clients: {row}", flush=True)
    text = rows_table(rows)
    print(text)
    if args.json:
        common.write_json(args.json, "load", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        body = (
            common.header(info=info)
            + "\n- One `fedtee server start` process and one load-generator process "
            "(`fedtee.eval.loadgen`, asyncio + grpc.aio) on the same machine; every virtual "
            "client has its own TLS connection, identity key and sim platform, enrols with "
            "sim evidence, and trains every round (all N selected; a round aggregates only "
            "when all N updates are accepted). Model: the example trainer's 650 float32 "
            f"parameters; {rounds} rounds.\n"
            "- *errors*: calls that failed for good; *retries*: calls the server shed "
            "(UNAVAILABLE / RESOURCE_EXHAUSTED) that the client retried with backoff. "
            "*round*: opened to aggregated, from the server's state.db. *server RSS*: the "
            "server process sampled from /proc every 0.2 s.\n\n" + text
        )
        common.write_doc_section("load", body, title="Load: concurrent clients against one server")
    return 0 if all(r["errors"] == 0 and r["ledger_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
