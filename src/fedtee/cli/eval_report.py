"""``fedtee eval report``: measure on this machine and write docs/evaluation.md."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any


def _report(args: argparse.Namespace) -> int:
    from fedtee.eval import report

    repo = args.repo.resolve() if args.repo else report.find_repo(Path.cwd().resolve())
    out = args.out if args.out.is_absolute() else repo / args.out
    only = tuple(x for part in args.only for x in part.split(",") if x)
    shown = (
        shlex.join(["fedtee", "eval", "report", *sys.argv[3:]])
        if len(sys.argv) > 2
        else ("fedtee eval report")
    )
    path, m = report.generate(
        repo=repo,
        out=out,
        quick=args.quick,
        only=only,
        attacks=not args.no_attacks,
        command=shown,
        progress=lambda s: print(s, flush=True),
    )
    problems = report.check_report(path.read_text())
    failed = [b.spec.name for b in m.benches.values() if not b.ok]
    if m.attacks is not None and not m.attacks.ok:
        failed.append("attacks")
    print(f"wrote {path} (data and plots in {path.parent / path.stem})")
    for p in problems:
        print(f"fedtee: report is malformed: {p}", file=sys.stderr)
    if failed:
        print(f"fedtee: not measured: {', '.join(failed)} (the report says why)", file=sys.stderr)
    return 1 if problems or failed else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report",
        help="run the measurements here and write docs/evaluation.md with plots",
        description=(
            "Run every benchmark in bench/ (as subprocesses, with --json) and the attack "
            "suite on this machine, and write a systematic evaluation of TEEs for federated "
            "learning: what each TEE type proves, the identity and veracity it gives, memory "
            "limits, residual risks and literature figures (with citations), the figures "
            "measured here, the attack table with and without attestation, and a "
            "recommendation per use case computed from those tables. Run it from a fedtee "
            "checkout after the README's set-up. Exits 0 when every measurement ran and the "
            "report is well formed, 1 otherwise (the report is still written and says what "
            "is missing)."
        ),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="run every benchmark in its --quick mode (small sizes, a minute or so each); "
        "for CI and a first look, not for the figures you publish",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("docs/evaluation.md"),
        help="the report to write (default: docs/evaluation.md in the checkout); its JSON "
        "data and PNG plots go to a folder beside it named after it (docs/evaluation/)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help="run only these benchmarks (verify, enrol, trust_cost, iot, silo, "
        "server_memory); the others are reported as not run",
    )
    p.add_argument(
        "--no-attacks",
        action="store_true",
        help="do not run the attack suite (its section then says so)",
    )
    p.add_argument(
        "--repo",
        type=Path,
        default=None,
        help="the fedtee checkout whose bench/ to run (default: found from the current "
        "directory upwards)",
    )
    p.set_defaults(handler=_report)
