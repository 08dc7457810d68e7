"""Server peak memory against the number of clients N, at a fixed model size P.

Run: ``.venv/bin/python bench/bench_server_memory.py [--quick] [--json PATH] [--no-doc]
[--clients 2,10,30,100] [--params 1000000] [--rounds 3] [--upload-chunks 1048576,262144]
[--max-transfers default,0,8]``.

One real ``fedtee server start`` process per N (TLS gRPC, sim attestation policy, receipts,
ledger, SQLite state; model of P float32 parameters) and N virtual clients in one
load-generator process (:mod:`fedtee.eval.loadgen`: each its own key, sim platform,
enrolment, signed receipts), every client selected in every round, so each round the server
takes N concurrent downloads and N concurrent uploads. The server's whole process tree is
sampled from /proc every 0.1 s: peak RSS, and RSS when idle before the clients come. The
server streams uploads to disk and aggregates one stored update at a time, so its peak
should be flat in N (issue 6): the table gives peak / peak at the smallest N.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import _common
from _fedtee_run import TRAINER, _cli, _env, _round_times, _stop, prepare

from fedtee.attest.attesters.sim import SimRoot
from fedtee.cli.init import trainer_measurement
from fedtee.eval.loadgen import LoadOptions, LoadTarget, run_load
from fedtee.localnet import wait_for_port
from fedtee.server.slots import DEFAULT_SEND_CHUNK_BYTES


def run_one(
    workdir: Path,
    *,
    clients: int,
    params: int,
    rounds: int,
    upload_chunk: int = 1 << 20,
    max_transfers: int | None = None,
) -> dict[str, object]:
    server_toml, _, port = prepare(workdir, clients=clients, params=params, rounds=rounds)
    if max_transfers is not None:  # else the server's default
        text = server_toml.read_text()
        assert "\n[server]\n" in text
        server_toml.write_text(
            text.replace("\n[server]\n", f"\n[server]\nmax_transfers = {max_transfers}\n", 1)
        )
    target = LoadTarget(
        address=f"127.0.0.1:{port}",
        ca_pem=(workdir / "ca.pem").read_bytes(),
        sim_root=SimRoot.from_pem(
            (workdir / "sim-root.pem").read_bytes(), (workdir / "sim-root.key").read_bytes()
        ),
        measurement=trainer_measurement(TRAINER),
    )
    with (workdir / "server.log").open("wb") as log:
        server = subprocess.Popen(
            _cli("server", "start", "--config", str(server_toml)),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=_env(),
        )
    sampler = _common.TreeSampler(server.pid, interval=0.1)
    error = ""
    try:
        wait_for_port(port, server, timeout_s=120)
        time.sleep(0.5)
        idle = _common.tree_rss_bytes(server.pid)
        sampler.start()
        # server_busy answers are asked again after their hint without spending attempts.
        options = LoadOptions(clients=clients, chunk_bytes=upload_chunk)
        report = asyncio.run(run_load(target, options))
        if not report.ok:
            error = (
                f"{report.errors} errors {report.error_reasons}, {report.rejected_updates} rejected"
            )
    finally:
        sampler.stop()
        _stop(server)
    round_s = _round_times(workdir / "state")
    if len(round_s) != rounds:
        error = error or f"{len(round_s)} of {rounds} rounds"
    return {
        "clients": clients,
        "params": params,
        "upload_chunk_kib": upload_chunk // 1024,
        "max_transfers": -1 if max_transfers is None else max_transfers,
        "rounds": len(round_s),
        "server_idle_mib": round(idle / 2**20, 1),
        "server_peak_mib": round(sampler.peak_by_root.get(server.pid, 0) / 2**20, 1),
        "server_peak_hwm_mib": round(sampler.hwm_by_root.get(server.pid, 0) / 2**20, 1),
        "model_mib": round(params * 4 / 2**20, 1),
        "round_s_median": round(_common.median(round_s[1:] or round_s), 3) if round_s else -1.0,
        "ok": not error,
        "error": error,
    }


def _kind(row: dict[str, object]) -> tuple[object, object]:
    return row.get("upload_chunk_kib"), row.get("max_transfers", -1)


def _slots_text(value: object) -> str:
    return "default" if value in (-1, None) else "no limit" if value == 0 else str(value)


def render(rows: list[dict[str, object]]) -> str:
    # Each row against the smallest N with the same upload chunk size and transfer slots.
    base: dict[object, float] = {}
    for r in rows:
        base.setdefault(_kind(r), float(str(r["server_peak_mib"])))
    return _common.table(
        (
            "N",
            "P (float32)",
            "model MiB",
            "upload chunk KiB",
            "transfer slots",
            "server idle MiB",
            "server peak MiB",
            "peak / peak at smallest N",
            "s/round",
            "ok",
        ),
        (
            (
                r["clients"],
                f"{r['params']:,}",
                r["model_mib"],
                r.get("upload_chunk_kib", "-"),
                _slots_text(r.get("max_transfers", -1)),
                f"{r['server_idle_mib']:,.0f}",
                f"{r['server_peak_mib']:,.0f}",
                f"{float(str(r['server_peak_mib'])) / base[_kind(r)]:.2f}",
                r["round_s_median"],
                "yes" if r["ok"] else f"**no**: {r['error']}",
            )
            for r in rows
        ),
        align="rrrrrrrrrl",
    )


def main() -> None:
    ap = _common.parser(__doc__)
    ap.add_argument("--clients", default="2,10,30,100", help="comma-separated N")
    ap.add_argument("--params", type=int, default=1_000_000, help="model size (float32)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per run")
    ap.add_argument(
        "--upload-chunks",
        default="1048576,262144",
        help="comma-separated UpdateChunk sizes the clients upload in, each run for every N "
        f"(1048576 is the client default; the server sends {DEFAULT_SEND_CHUNK_BYTES})",
    )
    ap.add_argument(
        "--max-transfers",
        default="default",
        help="comma-separated [server] max_transfers values, each run for every chunk size "
        "and N ('default': the server's own default; 0: no limit)",
    )
    ap.add_argument(
        "--note", action="append", default=[], help="a sentence for the doc section (repeatable)"
    )
    args = ap.parse_args()
    if args.quick:
        clients, params, rounds, chunks = [2, 10], 200_000, 2, [1 << 20]
        slots: list[int | None] = [None]
    else:
        clients = [int(x) for x in args.clients.split(",")]
        params, rounds = args.params, args.rounds
        chunks = [int(x) for x in args.upload_chunks.split(",")]
        slots = [None if x == "default" else int(x) for x in args.max_transfers.split(",")]
    info = _common.machine_info()
    print(_common.machine_line(info))
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="fedtee-bench-mem-"))
    try:
        for limit in slots:
            for chunk in chunks:
                for n in clients:
                    row = run_one(
                        scratch / f"n{n}",
                        clients=n,
                        params=params,
                        rounds=rounds,
                        upload_chunk=chunk,
                        max_transfers=limit,
                    )
                    shutil.rmtree(scratch / f"n{n}", ignore_errors=True)
                    print(row, flush=True)
                    rows.append(row)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(render(rows))
    if args.json:
        _common.write_json(args.json, "server_memory", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        pngs = plot(rows, _common.DOC.parent / "bench")
        text = "\n".join(
            [
                _common.header(info=info),
                "- One `fedtee server start` process; N virtual clients (fedtee.eval.loadgen, "
                "one process: own key, sim platform, enrolment, signed receipts each), all "
                f"selected every round, {rounds} rounds. Peak: highest summed VmRSS of the "
                "server's process tree, sampled every 0.1 s. Goal (issue 6): flat in N. The "
                f"server sends {DEFAULT_SEND_CHUNK_BYTES // 1024} KiB chunks; the clients upload "
                "in the chunk size of the "
                "row (1 MiB: a client's default; 256 KiB: `[runtime] chunk_bytes = 262144`).",
                "",
                render(rows),
                *(f"\n{note}" for note in args.note),
                *(
                    f"\n![server peak memory against N]"
                    f"({p.relative_to(_common.DOC.parent).as_posix()})"
                    for p in pngs
                ),
            ]
        )
        _common.write_doc_section("server_memory", text, title="Server memory against N")
        print(f"wrote {_common.DOC.relative_to(_common.ROOT)}")


def plot(rows: list[dict[str, object]], out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (the eval extra): no plot")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for kind in dict.fromkeys(_kind(r) for r in rows):
        mine = [r for r in rows if _kind(r) == kind]
        xs = [int(str(r["clients"])) for r in mine]
        label = f"peak, {kind[0]} KiB uploads, slots: {_slots_text(kind[1])}"
        ax.plot(xs, [float(str(r["server_peak_mib"])) for r in mine], "-o", label=label)
    kind0 = _kind(rows[0]) if rows else None
    first = [r for r in rows if _kind(r) == kind0]
    ax.plot(
        [int(str(r["clients"])) for r in first],
        [float(str(r["server_idle_mib"])) for r in first],
        "--",
        label="idle",
    )
    ax.set(xlabel="clients N", ylabel="server RSS (MiB)", xscale="log", ylim=(0, None))
    ax.set_title(f"server memory, P = {rows[0]['params']:,}" if rows else "server memory")
    ax.legend()
    fig.tight_layout()
    path = out_dir / "server_memory.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


if __name__ == "__main__":
    main()
