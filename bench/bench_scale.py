"""Simulated federations of 1,000 and 10,000 attested clients driven by this one machine.

The same set-up as bench_load.py (one ``fedtee server start`` process with SQLite state, the
ledger and a sim attestation policy; one load-generator process of asyncio virtual clients,
each with its own identity key and sim platform, so its own platform id), at federation
scale: every client enrols with sim evidence and trains every round, and a round aggregates
only when all N updates are accepted. To stay within the file descriptors of one machine
the virtual clients share TLS connections (N / 10 of them; gRPC multiplexes their calls),
and at most 200 of them enrol at once.

Reported per N: enrolment time (start of the load to the last credential) and rate, round
time (opened to aggregated, from the server's state.db), errors and retries, the server's
peak RSS, and whether the ledger verifies with all N contributions in every round. Client
work (key generation, evidence, signatures) runs on the same cores as the server, so these
are figures for the whole federation on one machine, not for the server alone.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import _common as common
from bench_load import rows_table, run_one

ENROLLING = 200  # clients between challenge and credential at once
POLLS_PER_S = 333  # GetTask calls a second from all waiting clients together
# Above the longest round: a 10,000-client round on a shared 2-core machine outlasted the
# default 600 s, and every client's re-attestation then competed with the uploads.
CREDENTIAL_TTL_S = 7200.0


def retry_after(clients: int) -> float:
    """The server's retry_after_s cap for N clients: waiting clients together make about
    POLLS_PER_S GetTask calls a second (never under the default 0.5 s)."""
    return max(0.5, round(clients / POLLS_PER_S, 1))


def retry_kinds(rows: list[dict[str, Any]]) -> str:
    """The retries of each run by call and kind, below the table (the load generator counts
    them in ``retry_kinds``)."""
    lines = [
        f"- {row['clients']} clients: {row['retry_kinds']}" for row in rows if row["retry_kinds"]
    ]
    return "\n\nRetries by call and kind:\n\n" + "\n".join(lines) if lines else ""


def main() -> int:
    p = common.parser(__doc__)
    p.add_argument(
        "--clients",
        type=int,
        nargs="+",
        default=None,
        help="federation sizes (default 1000 10000; --quick: 200 600)",
    )
    p.add_argument("--rounds", type=int, default=None, help="rounds per run (default 2; quick 1)")
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="give up on a run after this many seconds"
    )
    args = p.parse_args()
    sizes = args.clients or ([200, 600] if args.quick else [1000, 10_000])
    rounds = args.rounds or (1 if args.quick else 2)
    info = common.machine_info()
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix=f"fedtee-scale-{n}-") as tmp:
            row = run_one(
                Path(tmp),
                clients=n,
                rounds=rounds,
                channels=max(1, n // 10),
                timeout_s=args.timeout,
                max_enrolling=ENROLLING,
                retry_after_s=retry_after(n),
                credential_ttl_s=CREDENTIAL_TTL_S,
            )
        rows.append(row)
        print(f"{n} clients: {row}", flush=True)
    text = rows_table(rows) + retry_kinds(rows)
    print(text)
    if args.json:
        common.write_json(args.json, "scale", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        body = (
            common.header(info=info)
            + "\n- Whole federation on this one machine: one `fedtee server start` process "
            "and one load-generator process (`fedtee.eval.loadgen`) of N virtual clients, each "
            "with its own identity key and sim platform, sharing N/10 TLS connections. Every "
            f"client enrols with sim evidence (at most {ENROLLING} enrolling at once: a fleet "
            "arrives spread out, and 10,000 challenges at one instant would wait in the "
            "server's queue longer than a nonce lives) and trains every round; a round "
            "aggregates only when all N updates are accepted. Model: the example "
            f"trainer's 650 float32 parameters; {rounds} round(s).\n"
            "- The server's `[rounds] retry_after_s` is N / 333 s (3 s for 1,000, 30 s for "
            "10,000): with the default 0.5 s cap, 10,000 waiting clients would poll 20,000 "
            "times a second and starve enrolments and uploads. `credential_ttl_s` is "
            f"{CREDENTIAL_TTL_S:.0f} s, above the longest round.\n"
            "- *enrolment*: start of the load to the last credential; *round*: opened to "
            "aggregated, from the server's state.db; *server RSS*: sampled from /proc.\n"
            "- *retries*: calls the server shed (past its 4,096 calls in flight gRPC answers "
            "`RESOURCE_EXHAUSTED`; or a call outlived its 120 s deadline; or grpc.aio ended "
            "an upload as INTERNAL, `fedtee.eval.loadgen.EndedMidUpload`) and the client asked "
            "again after a jittered backoff (up to 2 s, at most 30 attempts a call). A round needs "
            "every client, so the run stops at the first client that gives up and reports it "
            "as an error.\n\n" + text
        )
        common.write_doc_section("scale", body, title="Scale: simulated federations")
    return 0 if all(r["errors"] == 0 and r["ledger_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
