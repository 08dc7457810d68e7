"""Silo profile: a large model update end to end over loopback, with memory measured.

A real federation (``fedtee server start`` and two ``fedtee client start`` processes, TLS
gRPC on 127.0.0.1, sim TEE attestation, signed receipts, ledger) runs one round on a float32
model of 500 MiB in 4 MiB tensors (``--quick``: 50 MiB), after a reference round on a 4 KiB
model (fedtee.eval.silo.run_silo). Reported per run:

- encode + hash + sign: the client's streaming first pass over its update (SHA-256 of the
  safetensors bytes straight from the tensors' memory) and the receipt's ECDSA signature,
  as MB/s of update (client events ``trained`` -> ``uploading``);
- upload: gRPC streaming of the update while the server spools it to disk, hashes it and
  then checks it tensor by tensor from a memory map (``uploading`` -> ``update_accepted``);
- round: the server's round time (opened -> aggregated, from state.db);
- peak resident set of the server and of each client (exact, from getrusage at exit), and
  the growth over the reference round as a multiple of the model size.

No GPU on the machines these figures come from; on a GPU machine the goal is 1 B parameters.
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path
from typing import Any

import _common

from fedtee.eval.silo import FEDERATION, MiB, SiloRun, run_silo
from fedtee.server.store import StateStore

MB = 1_000_000


def _round_s(run: SiloRun) -> float:
    store = StateStore.open(str(run.state_dir / "state.db"))
    try:
        rounds = store.rounds(FEDERATION)
    finally:
        store.close()
    done = [r for r in rounds if r.closed_ms is not None]
    return (done[0].closed_ms - done[0].opened_ms) / 1000 if done else math.nan  # type: ignore[operator]


def _rate(size: int, seconds: list[float]) -> float:
    ok = [s for s in seconds if s > 0 and math.isfinite(s)]
    return size / MB / statistics.mean(ok) if ok else math.nan


def measure(sizes: list[int], clients: int, workdir: Path) -> list[dict[str, Any]]:
    reference = run_silo(workdir / "reference", model_bytes=4096, clients=clients)
    rows = []
    for size in sizes:
        run = run_silo(workdir / f"model-{size // MiB}", model_bytes=size, clients=clients)
        ids = [f"client-{k}" for k in range(clients)]
        client_growth = max(
            (b - a) / size for a, b in zip(reference.client_peaks, run.client_peaks, strict=True)
        )
        rows.append(
            {
                "model_mib": size // MiB,
                "clients": clients,
                "hash_sign_mb_s": round(
                    _rate(size, [run.phase_s(c, "trained", "uploading") for c in ids]), 1
                ),
                "upload_mb_s": round(
                    _rate(size, [run.phase_s(c, "uploading", "update_accepted") for c in ids]), 1
                ),
                "round_s": round(_round_s(run), 2),
                "server_peak_mib": round(run.server_peak / MiB),
                "server_growth_x_model": round((run.server_peak - reference.server_peak) / size, 2),
                "client_peak_mib": round(max(run.client_peaks) / MiB),
                "client_growth_x_model": round(client_growth, 2),
                "reference_server_mib": round(reference.server_peak / MiB),
                "reference_client_mib": round(max(reference.client_peaks) / MiB),
            }
        )
    return rows


COLUMNS = [
    ("model (MiB)", "model_mib"),
    ("clients", "clients"),
    ("encode+hash+sign (MB/s)", "hash_sign_mb_s"),
    ("upload (MB/s)", "upload_mb_s"),
    ("round (s)", "round_s"),
    ("server peak (MiB)", "server_peak_mib"),
    ("server growth (x model)", "server_growth_x_model"),
    ("client peak (MiB)", "client_peak_mib"),
    ("client growth (x model)", "client_growth_x_model"),
]


def render(rows: list[dict[str, Any]], info: dict[str, Any]) -> str:
    ref = rows[0] if rows else {}
    return "\n\n".join(
        [
            _common.header(info=info),
            _common.table(
                [c for c, _ in COLUMNS], ([r[k] for _, k in COLUMNS] for r in rows), "r" * 9
            ),
            "Growth is the peak resident set minus that of the same federation on a 4 KiB "
            f"model (server {ref.get('reference_server_mib', '?')} MiB, client "
            f"{ref.get('reference_client_mib', '?')} MiB), divided by the model size. What "
            "it is made of: a client holds the downloaded model and its trainer's output "
            "(2x); the update is encoded, hashed and sent straight from the output's memory. "
            "The server holds its float64 FedAvg accumulator (2x a float32 model; the new "
            "global model is built as it is freed; the initial model file streams into the "
            "artifact store); uploads are spooled to disk while hashed, then checked and "
            "aggregated tensor by tensor from memory maps whose pages are released between "
            "tensors, so "
            "concurrent uploads add no model-sized buffer. A PyTorch client adds its module's "
            "parameters (1x; the adapter shares, never copies, CPU tensors). Throughputs "
            "include the server's work on the same 2 cores.",
            "No GPU machine was available for this run; the 1 B-parameter goal (4 GB of "
            "float32) needs one and stays to be measured.",
        ]
    )


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--mib", type=int, default=None, help="model size in MiB (default 500, --quick 50)"
    )
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    args = parser.parse_args()
    size = (args.mib or (50 if args.quick else 500)) * MiB
    info = _common.machine_info()
    print(_common.machine_line(info))
    with tempfile.TemporaryDirectory(prefix="bench-silo-") as tmp:
        rows = measure([size], args.clients, Path(tmp))
    print(_common.table([c for c, _ in COLUMNS], ([r[k] for _, k in COLUMNS] for r in rows)))
    if args.json is not None:
        _common.write_json(args.json, "silo", rows, quick=args.quick, machine=info)
    if not args.no_doc:
        doc = _common.write_doc_section(
            "silo", render(rows, info), title="Silo profile: large updates end to end"
        )
        print(f"wrote {doc.relative_to(_common.ROOT)}")


if __name__ == "__main__":
    main()
