"""What the trust features cost: round time with them on against the same run with them off.

Run: ``.venv/bin/python bench/bench_trust_cost.py [--quick] [--json PATH] [--no-doc]
[--params 10000000] [--clients 2] [--rounds 5] [--pairs 6]``.

The framework-overhead workload of bench_flower.py (real ``fedtee server start`` and client
processes over TLS gRPC, echo-plus-noise clients, FedAvg) twice per pair, alternating:

- ON (production): sim TEE attestation verified and appraised at enrolment, every update's
  receipt signature and digest checked, the hash-chained ledger written and fsynced with a
  signed checkpoint per round;
- OFF: the same server through bench/_serve_untrusted.py: any evidence admitted
  unverified, receipts unchecked, ledger appends dropped (measurement only: there is no
  configuration that does this).

Clients do the same work in both (they still sign receipts). Round time: median of rounds
2..R over all pairs. Goal (issue 6): ON at most 5% slower than OFF at P = 10,000,000. Beside
it, each pair's own overhead (its ON median over its OFF median), lowest / median /
highest: on a shared machine the spread between pairs is often wider than the effect.
``--quick``: P = 1,000,000, 3 rounds, one pair.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import _common
from _fedtee_run import run_federation

GOAL = 0.05


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--params", type=int, default=10_000_000, help="model size (float32)")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per run")
    ap.add_argument("--pairs", type=int, default=6, help="ON/OFF run pairs, alternating")
    args = ap.parse_args()
    params, rounds, pairs = (
        (1_000_000, 3, 1) if args.quick else (args.params, args.rounds, args.pairs)
    )
    info = _common.machine_info()
    print(_common.machine_line(info))
    times: dict[bool, list[float]] = {True: [], False: []}
    per_pair: list[float] = []  # each pair's ON median / OFF median - 1
    errors: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="fedtee-bench-trust-"))
    try:
        for k in range(pairs):
            mine: dict[bool, list[float]] = {}
            for trust in (True, False) if k % 2 == 0 else (False, True):
                work = scratch / f"{k}-{'on' if trust else 'off'}"
                run = run_federation(
                    work, clients=args.clients, params=params, rounds=rounds, trust=trust
                )
                shutil.rmtree(work, ignore_errors=True)
                label = "ON " if trust else "OFF"
                print(f"pair {k + 1} trust {label}: rounds {run.round_s} {run.error}", flush=True)
                if not run.ok:
                    errors.append(f"trust {label.strip()}: {run.error}")
                mine[trust] = run.round_s[1:] or run.round_s
                times[trust].extend(mine[trust])
            if mine.get(True) and mine.get(False):
                per_pair.append(_common.median(mine[True]) / _common.median(mine[False]) - 1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    on = _common.median(times[True]) if times[True] else float("nan")
    off = _common.median(times[False]) if times[False] else float("nan")
    overhead = on / off - 1 if off == off and off > 0 else float("nan")
    row = {
        "params": params,
        "clients": args.clients,
        "rounds": rounds,
        "pairs": pairs,
        "on_round_s": round(on, 4),
        "off_round_s": round(off, 4),
        "overhead": round(overhead, 4),
        # Flat (the JSON contract): the spread of the pairs' own overheads.
        "pair_overhead_min": round(min(per_pair), 4) if per_pair else float("nan"),
        "pair_overhead_median": round(_common.median(per_pair), 4) if per_pair else float("nan"),
        "pair_overhead_max": round(max(per_pair), 4) if per_pair else float("nan"),
        "goal_met": bool(overhead == overhead and overhead <= GOAL and not errors),
        "rounds_measured_on": len(times[True]),
        "rounds_measured_off": len(times[False]),
        "error": "; ".join(errors),
    }
    table = _common.table(
        (
            "P (float32)",
            "N",
            "trust ON s/round",
            "trust OFF s/round",
            "overhead",
            "per pair: lowest / median / highest",
            "goal <= 5%",
        ),
        [
            (
                f"{params:,}",
                args.clients,
                f"{on:.3f}",
                f"{off:.3f}",
                f"{overhead:+.1%}",
                " / ".join(
                    f"{x:+.1%}" for x in (min(per_pair), _common.median(per_pair), max(per_pair))
                )
                if per_pair
                else "-",
                "yes" if row["goal_met"] else "**no**",
            )
        ],
        align="rrrrrrl",
    )
    print(table)
    if args.json:
        _common.write_json(args.json, "trust_cost", [row], quick=args.quick, machine=info)
    if not args.no_doc:
        text = "\n".join(
            [
                _common.header(info=info),
                f"- {args.clients} client processes, {rounds} rounds per run, {pairs} ON/OFF "
                "pair(s) run alternately; round time is the median of rounds 2..R of all "
                "runs of a kind. ON: sim attestation, receipt checks, ledger (fsynced, a "
                "signed checkpoint per round). OFF: the same server with those three off "
                "(bench/_serve_untrusted.py). Goal (issue 6): at most 5% at P = 10,000,000.",
                "",
                table,
                *([f"\nFailed runs: {row['error']}."] if errors else []),
            ]
        )
        _common.write_doc_section("trust_cost", text, title="Cost of the trust features")
        print(f"wrote {_common.DOC.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    main()
