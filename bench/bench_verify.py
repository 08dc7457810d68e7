"""Verifications per second per evidence type, over the real vectors in tests/data.

Run from the repository root::

    .venv/bin/python bench/bench_verify.py [--quick] [--json PATH] [--no-doc] [--seconds S]

Single thread, one process: each figure is per core. Every verification is the library's
full ``verifier.verify(...)``: the evidence is parsed and its signature(s) checked every time;
collateral comes through the configured-source stack an operator gets
(``collateral_source(directory=...)``: the offline bundle behind the validity-aware memory
cache), warm after the first call. The verifiers cache what depends only on bytes they have
seen before (certificate-chain signatures by SHA-256 fingerprint, CRL and collateral
signatures, the QE report), re-checking every validity period against ``now`` on each call,
so a cache hit never changes an outcome. The first (cold) verification of each vector is
reported too. The bare ECDSA P-256 and P-384 verify rates of ``cryptography`` on the same
machine, in the same run, are printed beside them: one P-256 check is the floor of an SGX or
TDX quote (the quote signature), one P-384 check the floor of an SNP report.

Each figure is the best of several short timings: other processes on a shared machine only
ever slow a timing down. Unless ``--no-doc``, rewrites the ``verify`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import datetime as dt
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.model import CollateralSource, Evidence, TeeType, TrustAnchors
from fedtee.attest.registry import verifier_for
from fedtee.attest.trust.collateral import collateral_source
from fedtee.cli.attest import load_evidence, trust_anchors

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
GOAL = 2000  # verifications/s/core for SGX, TDX and SNP (issue 3)
GOAL_TYPES = {TeeType.SGX, TeeType.TDX, TeeType.SEV_SNP}


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Case:
    tee: TeeType
    vector: str
    evidence: Evidence
    trust: TrustAnchors
    collateral: CollateralSource
    now: dt.datetime


def _case(
    tee: TeeType,
    vector: str,
    blob: bytes,
    *,
    at: str,
    aux: dict[str, bytes] | None = None,
    bundle: str | None = None,
    trust: list[Path] | None = None,
) -> Case:
    now = _at(at)
    return Case(
        tee=tee,
        vector=vector,
        evidence=load_evidence(tee, blob, aux or {}),
        trust=trust_anchors(tee, trust or []),
        collateral=collateral_source(
            directory=DATA / bundle / "collateral" if bundle else None, clock=lambda: now
        ),
        now=now,
    )


def cases() -> list[Case]:
    snp = (DATA / "sev-snp" / "attestation.bin").read_bytes()
    out = [
        _case(
            TeeType.SGX,
            "sgx/occlum_quote_v3.dat (quote v3)",
            (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes(),
            at="2025-03-20T00:00:00Z",
            bundle="sgx",
        ),
        _case(
            TeeType.TDX,
            "tdx/tdx_prod_quote_SPR_E4.dat (quote v4)",
            # The shared file carries 39 test bytes after the 4935-byte quote (PROVENANCE.md).
            (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935],
            at="2023-07-01T01:00:00Z",
            bundle="tdx",
        ),
        _case(
            TeeType.SEV_SNP,
            "sev-snp/attestation.bin + vcek.der (report v2, Milan)",
            snp,
            at="2024-01-01T00:00:00Z",
            aux={"vcek": (DATA / "sev-snp" / "vcek.der").read_bytes()},
        ),
        _case(
            TeeType.SEV_SNP,
            "sev-snp/attestation.bin, VCEK from the bundle",
            snp,
            at="2024-01-01T00:00:00Z",
            bundle="sev-snp",
        ),
        _case(
            TeeType.TPM,
            "tpm/azure_vtpm_quote.json (RSA-2048 AK)",
            (DATA / "tpm" / "azure_vtpm_quote.json").read_bytes(),
            at="2025-03-20T00:00:00Z",
        ),
    ]
    for name in ("psa-2_0_0_sign1.bin", "psa-iot-1_sign1.bin"):
        out.append(
            _case(
                TeeType.PSA,
                f"psa/{name} (ES256)",
                (DATA / "psa" / name).read_bytes(),
                at="2026-01-01T00:00:00Z",
                trust=[DATA / "psa" / "tfm_iak_public.pem"],
            )
        )
    out.append(
        _case(
            TeeType.CCA,
            "cca/cca-example-token.cbor (2 x ES384)",
            (DATA / "cca" / "cca-example-token.cbor").read_bytes(),
            at="2026-01-01T00:00:00Z",
            trust=[DATA / "cca" / "cpak-pub.json"],
        )
    )
    root = SimRoot.generate()
    sim = SimAttester(platform=SimPlatform.generate(root), measurement=bytes(48), clock=lambda: 0)
    now = _at("2026-01-01T00:00:00Z")
    out.append(
        Case(
            TeeType.SIM,
            "sim (generated, ES256; not hardware)",
            sim.attest(bytes(64)),
            TrustAnchors(roots={TeeType.SIM: (root.cert,)}),
            collateral_source(clock=lambda: now),
            now,
        )
    )
    return out


def _ecdsa_floor(curve: ec.EllipticCurve, digest: hashes.HashAlgorithm) -> Callable[[], None]:
    key = ec.generate_private_key(curve)
    message = bytes(0x2A0)
    signature = key.sign(message, ec.ECDSA(digest))
    public = key.public_key()
    return lambda: public.verify(signature, message, ec.ECDSA(digest))


def best_rate(run: Callable[[], object], seconds: float, repeats: int) -> tuple[float, list[float]]:
    """The best of ``repeats`` timings of ``seconds / repeats`` each, in calls per second."""
    rates = [_rate(run, seconds / repeats) for _ in range(repeats)]
    return max(rates), rates


def _rate(run: Callable[[], object], seconds: float) -> float:
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            run()
        count += 20
    return count / elapsed


def paired_rate(
    run: Callable[[], object], floor: Callable[[], object], seconds: float, repeats: int
) -> tuple[float, float, list[float]]:
    """Time ``run`` and its ECDSA ``floor`` in adjacent slices, ``repeats`` times.

    Returns the best rate of ``run``, its ratio to the best rate of the floor in the same
    slices (what the verification costs in bare signature checks), and the rates of ``run``.
    Best-of on both sides: other processes on a shared machine only ever slow a slice down.
    """
    rates, floors = [], []
    for _ in range(repeats):
        rates.append(_rate(run, seconds / repeats / 2))
        floors.append(_rate(floor, seconds / repeats / 2))
    return max(rates), max(rates) / max(floors), rates


# The one signature check a warm verification cannot skip, per type (PSA/sim: one ES256).
P256, P384 = "ECDSA P-256 / SHA-256 verify", "ECDSA P-384 / SHA-384 verify"
FLOOR_OF = {
    TeeType.SGX: P256,
    TeeType.TDX: P256,
    TeeType.SEV_SNP: P384,
    TeeType.PSA: P256,
    TeeType.CCA: P384,
    TeeType.SIM: P256,
    TeeType.TPM: P256,  # RSA-2048: cheaper than P-256; shown against it for scale
}


def measure(seconds: float, repeats: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    floor_runs = {
        P256: _ecdsa_floor(ec.SECP256R1(), hashes.SHA256()),
        P384: _ecdsa_floor(ec.SECP384R1(), hashes.SHA384()),
    }
    rows: list[dict[str, Any]] = []
    for case in cases():
        verifier = verifier_for(case.tee)

        def run(c: Case = case, v: Any = verifier) -> Any:
            return v.verify(c.evidence, trust=c.trust, collateral=c.collateral, now=c.now)

        start = time.perf_counter()
        verified = run()  # cold: fills the collateral cache and the verifier's caches
        cold_ms = (time.perf_counter() - start) * 1000
        floor = FLOOR_OF[case.tee]
        rate, ratio, rates = paired_rate(run, floor_runs[floor], seconds, repeats)
        goal = case.tee in GOAL_TYPES
        rows.append(
            {
                "tee": case.tee.value,
                "vector": case.vector,
                "tcb_status": verified.tcb_status.value,
                "verifications_per_s": round(rate, 1),
                "timings_per_s": ", ".join(f"{r:,.0f}" for r in rates),
                "floor": floor,
                "ratio_to_floor": round(ratio, 3),
                "cold_first_ms": round(cold_ms, 2),
                "goal_per_s": GOAL if goal else None,
                "goal_met": (rate >= GOAL) if goal else None,
            }
        )
        print(
            f"{case.tee.value:<8} {rate:9,.0f} /s  {ratio:5.2f} x floor  "
            f"(cold {cold_ms:6.1f} ms)  {case.vector}",
            flush=True,
        )
    floors = {name: best_rate(fn, seconds, repeats)[0] for name, fn in floor_runs.items()}
    for name, rate in floors.items():
        print(f"{'floor':<8} {rate:9,.0f} /s  {name}")
    return rows, floors


def render(
    rows: list[dict[str, Any]], floors: dict[str, float], seconds: float, repeats: int
) -> str:
    p256, p384 = floors[P256], floors[P384]
    snp_rows = [r for r in rows if r["tee"] == TeeType.SEV_SNP.value]
    snp_ratio = max(r["ratio_to_floor"] for r in snp_rows)
    sgx_tdx = [r for r in rows if r["tee"] in (TeeType.SGX.value, TeeType.TDX.value)]
    met = sorted({r["tee"] for r in rows if r["goal_met"]})
    missed = sorted({r["tee"] for r in rows if r["goal_met"] is False})

    def goal_cell(row: dict[str, Any]) -> str:
        if row["goal_met"] is None:
            return "n/a"
        return "yes" if row["goal_met"] else "**no**"

    body = [
        _common.header(),
        f"- Python {platform.python_version()}, cryptography {cryptography.__version__}.",
        f"- Single thread, one process: every figure is per core, the best of {repeats} "
        f"timings of {seconds / repeats / 2:g} s each, each timing followed by one of the "
        "same length of the bare ECDSA check that type cannot skip ('x floor': the best "
        "verification rate over the best rate of that check in the same slices). Each call "
        "is the full `verify()`: parse, "
        "every signature of the evidence, chain and collateral checks at the vector's time. "
        "Collateral comes from the offline bundle through `collateral_source()` (memory cache, "
        "warm after the first call); certificate-chain, CRL and collateral signatures and the "
        "QE report are cached by the verifiers by exact bytes / SHA-256 fingerprints, with "
        "every validity period re-checked on each call. 'cold' is the first call of the run.",
        f"- Goal (issue 3): at least {GOAL:,} verifications/s/core for SGX, TDX and SEV-SNP.",
        "",
        _common.table(
            [
                "evidence",
                "vector",
                "TCB status",
                "verifications/s",
                "x floor",
                "cold (ms)",
                "goal met",
            ],
            [
                [
                    r["tee"],
                    r["vector"],
                    r["tcb_status"],
                    f"{r['verifications_per_s']:,.0f}",
                    f"{r['ratio_to_floor']:.2f} x {'P-384' if r['floor'] == P384 else 'P-256'}",
                    f"{r['cold_first_ms']:.1f}",
                    goal_cell(r),
                ]
                for r in rows
            ],
            "lllrrrl",
        ),
        "",
        "Floors measured in the same run (`cryptography`, one verify of a 672-byte message):",
        "",
        _common.table(
            ["primitive", "verifications/s"],
            [[name, f"{rate:,.0f}"] for name, rate in floors.items()],
            "lr",
        ),
        "",
        "Reading the figures:",
        "",
    ]
    if sgx_tdx:
        ratio = min(r["ratio_to_floor"] for r in sgx_tdx)
        body.append(
            f"- SGX / TDX: a warm quote runs at {ratio:.2f} x the bare P-256 verify rate on the "
            "same core (the quote signature is the one ECDSA check left per call; parsing, the "
            "PCK extension read and the TCB-level match are the rest). So they reach "
            f"{GOAL:,}/s/core wherever one P-256 verify runs at {GOAL / ratio:,.0f}/s or more; "
            f"the best P-256 rate seen in this run is {p256:,.0f}/s, which gives "
            f"{ratio * p256:,.0f}/s."
        )
    body.append(
        f"- SEV-SNP: the report's ECDSA P-384 signature must be checked on every call; a warm "
        f"report runs at {snp_ratio:.2f} x the bare P-384 rate, and `cryptography` does "
        f"{p384:,.0f} P-384 verifies/s here at best, so SNP is bounded by that floor: "
        f"{GOAL:,}/s/core needs a CPU that verifies P-384 at {GOAL / snp_ratio:,.0f}/s "
        "(about 0.5 ms each or less). Nothing in fedtee's code is left to remove from that path."
    )
    body.append(
        "- Goal met here by: "
        + (", ".join(met) if met else "none")
        + ("; missed by: " + ", ".join(missed) if missed else "")
        + ". Figures from this shared 2-core machine are noisy (see the load average above); "
        "re-run on an idle machine for the real per-core rate."
    )
    return "\n".join(body)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="timing per vector, half of it on the paired floor (default 4, --quick 0.6)",
    )
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else (0.6 if args.quick else 4.0)
    repeats = 3 if args.quick else 8
    print(f"python {platform.python_version()}, one thread; {_common.machine_line()}")
    rows, floors = measure(seconds, repeats)
    floor_rows = [
        {"tee": "floor", "vector": name, "verifications_per_s": round(rate, 1)}
        for name, rate in floors.items()
    ]
    if args.json is not None:
        _common.write_json(args.json, "verify", rows + floor_rows, quick=args.quick)
    if not args.no_doc:
        doc = _common.write_doc_section(
            "verify",
            render(rows, floors, seconds, repeats),
            title="Attestation: verifications per second",
        )
        print(f"wrote {doc.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
