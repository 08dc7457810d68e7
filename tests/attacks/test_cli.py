"""``fedtee eval attacks``: exit code, table and JSON on a subset of the suite."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedtee.cli import eval_attacks
from fedtee.cli.main import main
from fedtee.errors import Reason
from fedtee.eval import attacks


def test_subset_exits_0_and_writes_the_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "attacks.json"
    code = main(["eval", "attacks", "--only", "sybil,update-nan", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "sybil" in printed and "platform_already_enrolled" in printed
    doc = json.loads(out.read_text())
    assert datetime.fromisoformat(doc["date"]).tzinfo is not None
    by_id = {s["id"]: s for s in doc["scenarios"]}
    assert set(by_id) == {"sybil", "update-nan"}
    for s in by_id.values():
        assert set(s) >= {
            "id",
            "description",
            "expected_reason",
            "observed_reason",
            "rejected",
            "honest_completed",
            "ledger_recorded",
            "without_attestation",
        }
        assert s["rejected"] and s["honest_completed"] and s["ledger_recorded"]
    assert by_id["sybil"]["without_attestation"] == "accepted"
    assert by_id["update-nan"]["without_attestation"] == "rejected:update_nonfinite"


def test_a_scenario_not_refused_as_expected_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (sybil,) = attacks.select(["sybil"])
    # A seam: claim the wrong expected reason, so the real refusal no longer matches it.
    monkeypatch.setattr(attacks, "SCENARIOS", (replace(sybil, expected=Reason.NONCE_REUSED),))
    out = tmp_path / "a.json"
    code = main(["eval", "attacks", "--no-contrast", "--json", str(out)])
    assert code == 1
    (s,) = json.loads(out.read_text())["scenarios"]
    assert (s["rejected"], s["observed_reason"]) == (False, "platform_already_enrolled")
    assert s["without_attestation"] == "not run"
    assert "EXPECTED nonce_reused" in capsys.readouterr().out


def test_unknown_ids_and_partial_docs_are_refused(tmp_path: Path) -> None:
    assert main(["eval", "attacks", "--only", "no-such-attack"]) == 2
    doc = tmp_path / "security.md"
    doc.write_text(f"x\n{eval_attacks.DOC_START}\nold\n{eval_attacks.DOC_END}\ny\n")
    assert main(["eval", "attacks", "--only", "sybil", "--write-docs", "--docs", str(doc)]) == 2
    assert "old" in doc.read_text()


def test_doc_section_is_replaced_between_its_markers() -> None:
    result = attacks.ScenarioResult(
        id="sybil",
        description="one platform enrolling as a second client",
        expected_reason="platform_already_enrolled",
        observed_reason="platform_already_enrolled",
        rejected=True,
        honest_completed=True,
        ledger_recorded=True,
        without_attestation="accepted",
    )
    body = eval_attacks.markdown_tables(
        [result], command="fedtee eval attacks --write-docs", now=datetime(2026, 1, 2, tzinfo=UTC)
    )
    text = f"prose\n{eval_attacks.DOC_START}\nold table\n{eval_attacks.DOC_END}\nmore prose\n"
    new = eval_attacks.replace_section(text, body)
    assert new.startswith("prose\n") and new.endswith(f"{eval_attacks.DOC_END}\nmore prose\n")
    assert "old table" not in new
    assert "| `sybil` | **accepted** |" in new
    assert "1 of 1 attacks refused" in new
    with pytest.raises(ValueError):
        eval_attacks.replace_section("no markers", body)


def test_the_quiet_run_leaves_the_fedtee_log_level_as_it_found_it() -> None:
    import logging

    logger = logging.getLogger("fedtee")
    before = logger.level
    assert main(["eval", "attacks", "--only", "no-such-attack"]) == 2
    assert logger.level == before
