"""fedtee against Flower 1.42 on the same framework-overhead workload, in one run.

Run: ``.venv/bin/python bench/bench_flower.py [--quick] [--json PATH] [--no-doc]
[--clients 2,10,30] [--params 200000,10000000] [--rounds 5] [--skip-flower]
[--flower-max-clients-at 200000:10]``.

Workload (issue 6): N clients and a model of P float32 parameters, R rounds; every client
returns the parameters it received plus small deterministic noise (added in place, the same
way on both sides); equal-weight FedAvg. Both frameworks run as real separate processes on
loopback:

- fedtee: ``fedtee server start`` and N ``fedtee client start`` (TLS gRPC, sim TEE
  attestation, signed receipts, the ledger; see bench/_fedtee_run.py and
  bench/noise_trainer.py);
- Flower 1.42, installed on first use into its own venv (bench/.flower-venv, git-ignored):
  ``flower-superlink --insecure`` and N ``flower-supernode --insecure``, the app in
  bench/flower_app submitted with ``flwr run``. Flower 1.42 starts a SuperExec beside the
  SuperLink and each SuperNode, and a ServerApp / ClientApp process per run / message.

Reported per configuration: per-round wall time (median of the rounds after the first),
server peak RSS (the server's whole process tree) and client peak RSS (the largest client
process tree), each sampled from /proc every 0.1 s, and the fedtee/Flower ratios. Goals:
round time ratio <= 0.10 at both sizes, client peak RSS ratio <= 0.20. ``--quick``: N=2,
P=200,000, 2 rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common
import _fedtee_run

from fedtee.localnet import free_port, wait_for_port

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".flower-venv"
APP = BENCH / "flower_app"
FLWR_SPEC = "flwr==1.42.*"
ROUND_GOAL = 0.10
RSS_GOAL = 0.20


# ------------------------------------------------------------------------------ Flower


def ensure_flower() -> Path:
    """The Flower venv's bin directory, creating the venv and installing Flower if needed."""
    bin_dir = VENV / "bin"
    if not (bin_dir / "flower-superlink").exists():
        print(f"installing {FLWR_SPEC} into {VENV.relative_to(_common.ROOT)} (first use)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "-q", FLWR_SPEC, "numpy"], check=True)
    return bin_dir


def flower_version(bin_dir: Path) -> str:
    done = subprocess.run(
        [str(bin_dir / "python"), "-c", "import flwr; print(flwr.__version__)"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


@dataclass(kw_only=True)
class Run:
    framework: str
    clients: int
    params: int
    rounds: int
    round_s: list[float] = field(default_factory=list)
    server_peak: int = 0
    client_peak: int = 0
    ok: bool = False
    error: str = ""

    @property
    def median_round_s(self) -> float:
        later = self.round_s[1:] or self.round_s
        return _common.median(later) if later else float("nan")


def _kill_groups(procs: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """Stop processes started in their own sessions, and everything they started: SIGTERM
    to every group at once, then SIGKILL to the groups still there after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(p.poll() is None for p in live):
            time.sleep(0.1)
    for proc in procs:
        # Orphans (a ServerApp/ClientApp whose SuperExec died first) share the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run_flower(
    bin_dir: Path, workdir: Path, *, clients: int, params: int, rounds: int, timeout_s: float
) -> Run:
    run = Run(framework="flower", clients=clients, params=params, rounds=rounds)
    home = workdir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "bench"\n\n'
        f'[superlink.bench]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    env = {
        **os.environ,
        "FLWR_HOME": str(home),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    out_file = workdir / "rounds.json"
    logs = workdir / "logs"
    logs.mkdir(exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    sampler = _common.TreeSampler(interval=0.1)

    def spawn(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (logs / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                start_new_session=True,
            )
        procs.append(proc)
        sampler.add(proc.pid)
        return proc

    superlink: subprocess.Popen[bytes] | None = None
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        superlink = spawn("superlink", ["flower-superlink", "--insecure", "--port", str(port)])
        sampler.start()
        wait_for_port(port, timeout_s=120, what="Flower's SuperLink")
        for k in range(clients):
            nodes.append(
                spawn(
                    f"supernode-{k}",
                    [
                        "flower-supernode",
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={k} num-partitions={clients}",
                    ],
                )
            )
        run_config = f"params={params} clients={clients} rounds={rounds} out-file='{out_file}'"
        with (logs / "flwr-run.log").open("wb") as log:
            done = subprocess.run(
                ["flwr", "run", str(APP), "bench", "--run-config", run_config, "--stream"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
                timeout=timeout_s,
                check=False,
            )
        stamps = json.loads(out_file.read_text())["stamps"] if out_file.exists() else []
        run.round_s = [b - a for a, b in itertools.pairwise(stamps)]
        if done.returncode != 0 or len(run.round_s) != rounds:
            raise RuntimeError(
                f"flwr run exited {done.returncode} after {len(run.round_s)} of {rounds} rounds"
            )
        run.ok = True
    except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as exc:
        run.error = str(exc)
    finally:
        sampler.stop()
        _kill_groups(procs)
    run.server_peak = sampler.peak_by_root.get(superlink.pid, 0) if superlink else 0
    run.client_peak = max((sampler.peak_by_root.get(p.pid, 0) for p in nodes), default=0)
    return run


def run_fedtee(workdir: Path, *, clients: int, params: int, rounds: int, timeout_s: float) -> Run:
    fr = _fedtee_run.run_federation(
        workdir, clients=clients, params=params, rounds=rounds, timeout_s=timeout_s
    )
    return Run(
        framework="fedtee",
        clients=clients,
        params=params,
        rounds=rounds,
        round_s=fr.round_s,
        server_peak=fr.server_peak,
        client_peak=fr.client_peak,
        ok=fr.ok,
        error=fr.error,
    )


# ------------------------------------------------------------------------------ report


def _ratio(a: float, b: float) -> float:
    return a / b if b and a == a and b == b else float("nan")


def rows_for(fed: Run, flo: Run | None) -> dict[str, object]:
    row: dict[str, object] = {
        "clients": fed.clients,
        "params": fed.params,
        "rounds": fed.rounds,
        "fedtee_ok": fed.ok,
        "fedtee_round_s": round(fed.median_round_s, 4),
        "fedtee_server_peak_mib": round(fed.server_peak / 2**20, 1),
        "fedtee_client_peak_mib": round(fed.client_peak / 2**20, 1),
        "fedtee_error": fed.error,
    }
    if flo is not None:
        rr = _ratio(fed.median_round_s, flo.median_round_s)
        cr = _ratio(fed.client_peak, flo.client_peak)
        row |= {
            "flower_ok": flo.ok,
            "flower_round_s": round(flo.median_round_s, 4),
            "flower_server_peak_mib": round(flo.server_peak / 2**20, 1),
            "flower_client_peak_mib": round(flo.client_peak / 2**20, 1),
            "flower_error": flo.error,
            "round_time_ratio": round(rr, 4),
            "server_rss_ratio": round(_ratio(fed.server_peak, flo.server_peak), 4),
            "client_rss_ratio": round(cr, 4),
            "round_goal_met": bool(fed.ok and flo.ok and rr <= ROUND_GOAL),
            "client_rss_goal_met": bool(fed.ok and flo.ok and cr <= RSS_GOAL),
        }
    return row


def _fmt_s(x: object) -> str:
    return f"{x:.2f}" if isinstance(x, float) and x == x else "-"


def _fmt_mib(x: object) -> str:
    return f"{x:,.0f}" if isinstance(x, float) and x > 0 else "-"


def _fmt_ratio(x: object, goal: float) -> str:
    if not isinstance(x, float) or x != x:
        return "-"
    return f"{x:.3f}" + ("" if x <= goal else " (**misses**)")


def render(rows: list[dict[str, object]]) -> str:
    out = []
    for r in rows:
        out.append(
            (
                r["clients"],
                f"{r['params']:,}",
                _fmt_s(r["fedtee_round_s"]),
                _fmt_s(r.get("flower_round_s")),
                _fmt_ratio(r.get("round_time_ratio"), ROUND_GOAL),
                _fmt_mib(r["fedtee_server_peak_mib"]),
                _fmt_mib(r.get("flower_server_peak_mib")),
                _fmt_mib(r["fedtee_client_peak_mib"]),
                _fmt_mib(r.get("flower_client_peak_mib")),
                _fmt_ratio(r.get("client_rss_ratio"), RSS_GOAL),
            )
        )
    return _common.table(
        (
            "N",
            "P (float32)",
            "fedtee s/round",
            "Flower s/round",
            "ratio (goal <= 0.10)",
            "fedtee server MiB",
            "Flower server MiB",
            "fedtee client MiB",
            "Flower client MiB",
            "ratio (goal <= 0.20)",
        ),
        out,
        align="rlrrrrrrrr",
    )


def plot(rows: list[dict[str, object]], out_dir: Path) -> list[Path]:
    """Round time against N (one line per P and framework) as PNG; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (the eval extra): no plot")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(14, 4))
    for params in sorted({int(str(r["params"])) for r in rows}):
        sel = sorted((r for r in rows if r["params"] == params), key=lambda r: str(r["clients"]))
        sel = sorted(sel, key=lambda r: int(str(r["clients"])))
        for fw, style in (("fedtee", "-o"), ("flower", "--s")):
            pts = [
                (int(str(r["clients"])), r.get(f"{fw}_round_s"), r.get(f"{fw}_client_peak_mib"))
                for r in sel
                if r.get(f"{fw}_ok")
            ]
            if not pts:
                continue
            label = f"{'fedtee' if fw == 'fedtee' else 'Flower'}, P={params:,}"
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], style, label=label)
    for n in sorted({int(str(r["clients"])) for r in rows}):
        for fw, style in (("fedtee", "-o"), ("flower", "--s")):
            pts = sorted(
                (int(str(r["params"])), r.get(f"{fw}_round_s"))
                for r in rows
                if r["clients"] == n and r.get(f"{fw}_ok")
            )
            if len(pts) > 1:
                label = f"{'fedtee' if fw == 'fedtee' else 'Flower'}, N={n}"
                ax3.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax3.set(xlabel="model size P (float32)", ylabel="seconds per round (median)")
    ax3.set(xscale="log", yscale="log")
    ax3.set_title("round time against model size")
    ax3.legend(fontsize=7)
    ax1.set(xlabel="clients N", ylabel="seconds per round (median)", yscale="log")
    ax1.set_title("round time against clients")
    ax2.set(xlabel="clients N", ylabel="MiB (largest client process tree)", yscale="log")
    ax2.set_title("client peak RSS")
    ax1.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "flower_vs_fedtee.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths


def doc_section(
    rows: list[dict[str, object]],
    *,
    version: str,
    info: dict[str, object],
    pngs: list[Path],
    skipped: list[str],
    rounds: int,
    notes: list[str],
) -> str:
    lines = [
        _common.header(info=info),
        f"- Flower {version} (its own venv, bench/.flower-venv), insecure mode, deployment "
        "runtime: SuperLink + SuperExec + a ServerApp process; per client a SuperNode + "
        "SuperExec + a ClientApp process per message. Flower 1.42's Fleet API is HTTP "
        '(its `flower-superlink --help`: "The Fleet API now operates over HTTP").',
        "- fedtee: `fedtee server start` + N `fedtee client start` processes, TLS gRPC, "
        "sim TEE attestation, signed receipts and the ledger on.",
        f"- Workload: {rounds} rounds; each client returns the parameters it received plus "
        "small deterministic noise: a 64 Ki-element pattern per client, drawn once from its "
        "seed (SplitMix64 in numpy integer arithmetic, the same values on both sides; not "
        "numpy.random, whose import costs each client process about 7 MiB), "
        "added in place block after block on both sides (to the downloaded model's own "
        "buffer on fedtee, through its `fit_in_place`; to the arrays `to_numpy_ndarrays()` "
        "returns on Flower); equal-weight FedAvg. Round time: "
        "median of rounds "
        "2..R, each measured end to end between two aggregated models. RSS: peak of the "
        "summed VmRSS of a whole process tree, sampled every 0.1 s (server tree; largest "
        "client tree).",
        "",
        render(rows),
    ]
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += ["", *notes] if notes else []
    failed = [
        f"{fw} N={r['clients']} P={r['params']:,}: {r.get(fw + '_error')}"
        for r in rows
        for fw in ("fedtee", "flower")
        if r.get(f"{fw}_error")
    ]
    if failed:
        lines += ["", "Failed runs: " + "; ".join(str(f) for f in failed) + "."]
    for png in pngs:
        rel = png.relative_to(_common.DOC.parent).as_posix()
        lines += ["", f"![round time and client memory against N]({rel})"]
    return "\n".join(lines)


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument(
        "--replot",
        metavar="JSON",
        type=Path,
        default=None,
        help="only redraw docs/bench/flower_vs_fedtee.png from a --json file of an earlier run",
    )
    ap.add_argument("--clients", default="2,10,30", help="comma-separated N (default 2,10,30)")
    ap.add_argument(
        "--params",
        default="200000,10000000",
        help="comma-separated model sizes in float32 parameters (default 200000,10000000)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="rounds per run (default 5)")
    ap.add_argument(
        "--skip-flower", action="store_true", help="run fedtee only (no Flower install)"
    )
    ap.add_argument(
        "--flower-max-clients-at",
        default="200000:10",
        metavar="P:N",
        help="skip Flower runs with more than N clients at P parameters or more (default "
        "200000:10: on a 2-core, 24 GiB machine Flower with 30 clients does not fit in memory "
        "at 10,000,000 parameters, and at 200,000 it ran past the 30-minute limit or failed; "
        "docs/benchmarks.md); 0:0 runs all",
    )
    ap.add_argument(
        "--timeout", type=float, default=1800.0, help="give up on one run after S seconds"
    )
    ap.add_argument(
        "--note",
        action="append",
        default=[],
        help="a sentence to add to the doc section (repeatable), e.g. what was not run and why",
    )
    args = ap.parse_args()
    if args.replot is not None:
        print(plot(json.loads(args.replot.read_text())["results"], _common.DOC.parent / "bench"))
        return
    if args.quick:
        clients, sizes, rounds = [2], [200_000], 2
    else:
        clients = [int(x) for x in args.clients.split(",")]
        sizes = [int(x) for x in args.params.split(",")]
        rounds = args.rounds
    cap_p, cap_n = (int(x) for x in args.flower_max_clients_at.split(":"))
    info = _common.machine_info()
    print(_common.machine_line(info))
    bin_dir = None if args.skip_flower else ensure_flower()
    version = flower_version(bin_dir) if bin_dir else "-"
    rows: list[dict[str, object]] = []
    skipped: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix="fedtee-bench-flower-"))
    try:
        for params in sizes:
            for n in clients:
                fed = run_fedtee(
                    scratch / f"fedtee-{n}-{params}",
                    clients=n,
                    params=params,
                    rounds=rounds,
                    timeout_s=args.timeout,
                )
                shutil.rmtree(scratch / f"fedtee-{n}-{params}", ignore_errors=True)
                print(
                    f"fedtee N={n} P={params:,}: {fed.median_round_s:.2f} s/round, "
                    f"server {fed.server_peak / 2**20:,.0f} MiB, client "
                    f"{fed.client_peak / 2**20:,.0f} MiB {fed.error}",
                    flush=True,
                )
                flo = None
                if bin_dir is not None:
                    if cap_p and params >= cap_p and n > cap_n:
                        skipped.append(
                            f"Flower with N={n} at P={params:,} (--flower-max-clients-at)"
                        )
                    else:
                        flo = run_flower(
                            bin_dir,
                            scratch / f"flower-{n}-{params}",
                            clients=n,
                            params=params,
                            rounds=rounds,
                            timeout_s=args.timeout,
                        )
                        print(
                            f"Flower N={n} P={params:,}: {flo.median_round_s:.2f} s/round, "
                            f"server {flo.server_peak / 2**20:,.0f} MiB, client "
                            f"{flo.client_peak / 2**20:,.0f} MiB {flo.error}",
                            flush=True,
                        )
                rows.append(rows_for(fed, flo))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print(render(rows))
    if args.json:
        _common.write_json(args.json, "flower", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        pngs = plot(rows, _common.DOC.parent / "bench")
        _common.write_doc_section(
            "flower",
            doc_section(
                rows,
                version=version,
                info=info,
                pngs=pngs,
                skipped=skipped,
                rounds=rounds,
                notes=args.note,
            ),
            title="fedtee and Flower: the same workload side by side",
        )
        print(f"wrote {_common.DOC.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    main()
