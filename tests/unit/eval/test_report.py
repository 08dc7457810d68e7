"""fedtee eval report: recommendations follow the tables, the report is well formed, and a
real (quick) run of the CLI writes it with the data it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fedtee.eval import report
from fedtee.eval.report import BenchRun, BenchSpec, Measurements
from fedtee.eval.tees import CITATIONS, PROFILES

REPO = Path(__file__).resolve().parents[3]


def _run(name: str, rows: list[dict[str, Any]]) -> BenchRun:
    spec = next(b for b in report.BENCHES if b.name == name)
    return BenchRun(spec, "cmd", ok=True, doc={"bench": name, "results": rows})


def _measured(**benches: list[dict[str, Any]]) -> Measurements:
    m = Measurements()
    for name, rows in benches.items():
        m.benches[name] = _run(name, rows)
    return m


VERIFY = [
    {"tee": "sgx", "per_s": 1900.0},
    {"tee": "tdx", "per_s": 1300.0},
    {"tee": "sev-snp", "per_s": 850.0},
    {"tee": "tpm", "per_s": 4200.0},
    {"tee": "psa", "per_s": 2600.0},
    {"tee": "cca", "per_s": 260.0},
]
ENROL = [{"tee": "tpm", "phase": "enrolment (challenge + ...)", "median_ms": 15.0}]


def test_every_citation_used_by_a_profile_exists() -> None:
    used = {c for p in PROFILES for _, c in p.risks if c} | {
        f.citation for p in PROFILES for f in p.literature
    }
    assert used <= set(CITATIONS), used - set(CITATIONS)


def test_iot_recommendation_follows_the_measurements() -> None:
    m = _measured(verify=VERIFY, enrol=ENROL, iot=[{"peak_rss_mib": 38.0}])
    ranked = [p.tee for p, _ in report.recommend("iot", m).ranked]
    assert ranked[0] == "tpm"
    assert "sim" not in ranked and "tdx" not in ranked  # hard requirements
    # Without the TPM's measured enrolment and verification, PSA and TPM tie on properties
    # except maturity: the measurements are what separates them.
    bare = report.recommend("iot", _measured())
    scores = {p.tee: s for p, s in bare.ranked}
    assert scores["tpm"] - scores["psa"] == pytest.approx(1 / 3)
    assert report.recommend("iot", m).ranked[0][1] > bare.ranked[0][1]


def test_silo_recommendation_uses_the_verification_rate_to_break_the_cvm_tie() -> None:
    fast_tdx = _measured(verify=VERIFY, silo=[{"update_mib": 500.0}])
    assert report.recommend("silo", fast_tdx).ranked[0][0].tee == "tdx"
    swapped = [dict(r, per_s=5000.0) if r["tee"] == "sev-snp" else r for r in VERIFY]
    swapped = [dict(r, per_s=100.0) if r["tee"] == "tdx" else r for r in swapped]
    fast_snp = _measured(verify=swapped, silo=[{"update_mib": 500.0}])
    assert report.recommend("silo", fast_snp).ranked[0][0].tee == "sev-snp"
    # 1,300/s against 850/s is a small gap: equivalent; 5,000/s against 100/s is not.
    assert "equivalent choice" in report.explain(report.recommend("silo", fast_tdx))
    assert "the runner-up" in report.explain(report.recommend("silo", fast_snp))


def test_a_model_no_tee_can_hold_excludes_every_tee() -> None:
    huge = _measured(silo=[{"update_bytes": 4 * 2**50}])  # 4 PiB
    r = report.recommend("silo", huge)
    assert r.ranked == []
    assert report.explain(r).startswith("No TEE type")


def _render(m: Measurements, tmp_path: Path) -> str:
    return report.render(
        m=m,
        info=report.machine(),
        quick=True,
        command="fedtee eval report --quick",
        plots=[],
        plot_note="no plots in this test",
        data_rel="evaluation",
    )


def test_rendered_report_is_well_formed_and_check_finds_damage(tmp_path: Path) -> None:
    m = _measured(verify=VERIFY, enrol=ENROL)
    m.benches["iot"] = BenchRun(
        next(b for b in report.BENCHES if b.name == "iot"), "cmd", ok=False, error="boom"
    )
    m.attacks = report.AttackRun(
        "fedtee eval attacks --json PATH",
        ok=True,
        doc={
            "scenarios": [
                {"id": "tamper", "expected_reason": "update_digest_mismatch",
                 "observed_reason": "update_digest_mismatch", "rejected": True,
                 "honest_completed": True, "ledger_recorded": True,
                 "without_attestation": "accepted"},
            ]
        },
    )  # fmt: skip
    text = _render(m, tmp_path)
    assert report.check_report(text) == []
    assert "**Not measured**: boom" in text
    assert "1 of 1 attacks were stopped" in text and "1 of them would have been accepted" in text
    assert "| tdx |" in text and "1,300" in text
    assert report.check_report(text.replace("## Recommendations", "## Other")) != []
    assert report.check_report(text.replace('id="ref-foreshadow"', "")) == [
        "citation foreshadow has no reference entry"
    ]


def test_a_missing_or_broken_bench_is_reported_not_raised(tmp_path: Path) -> None:
    spec = BenchSpec("nope", "bench/bench_does_not_exist.py", "t", "w", 10)
    run = report.run_bench(spec, repo=REPO, quick=True, scratch=tmp_path)
    assert not run.ok and "not in this checkout" in run.error
    bad = tmp_path / "repo"
    (bad / "bench").mkdir(parents=True)
    (bad / "bench" / "bench_bad.py").write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[sys.argv.index('--json') + 1]); p.write_text('{not json')\n"
    )
    run = report.run_bench(
        BenchSpec("bad", "bench/bench_bad.py", "t", "w", 30), repo=bad, quick=True, scratch=tmp_path
    )
    assert not run.ok and "malformed JSON" in run.error


def test_find_repo_explains_where_to_run(tmp_path: Path) -> None:
    from fedtee.errors import ConfigError

    assert report.find_repo(REPO / "src" / "fedtee") == REPO
    with pytest.raises(ConfigError, match="run `fedtee eval report` from"):
        report.find_repo(tmp_path)


@pytest.mark.slow
def test_quick_report_from_the_cli(tmp_path: Path) -> None:
    out = tmp_path / "evaluation.md"
    done = subprocess.run(
        [sys.executable, "-m", "fedtee.cli.main", "eval", "report", "--quick", "--only",
         "enrol", "--no-attacks", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    assert report.check_report(text) == []
    data = json.loads((tmp_path / "evaluation" / "enrol.json").read_text())
    assert data["bench"] == "enrol" and data["quick"] is True
    sim = [r for r in data["results"] if r["tee"] == "sim" and "enrolment" in r["phase"]]
    assert sim and sim[0]["median_ms"] > 0
    assert "bench/bench_enrol.py --quick" in text


def test_an_exact_tie_recommends_both() -> None:
    both_fast = [dict(r, per_s=3000.0) if r["tee"] in ("tdx", "sev-snp") else r for r in VERIFY]
    text = report.explain(report.recommend("silo", _measured(verify=both_fast)))
    assert "tie" in text and "either is recommended" in text
    assert "Intel TDX" in text and "AMD SEV-SNP" in text
