"""Inputs that crashed a parser (found by fuzzing) must raise only typed errors.

Each file under ``tests/fuzz/regressions/<target>/`` is fed to ``fuzz/targets.py``'s target of
that name; see docs/fuzzing.md for how files get here.

Crashes still open in another module's code are listed in :data:`OPEN` and marked
``xfail(strict=True, raises=...)``: the test documents the exact failure today, and the
moment the owner's fix lands it XPASSes, which fails strictly, so the entry gets removed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedtee.errors import FedteeError, Reason

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz"))

import targets  # noqa: E402  (fuzz/ is not a package: the harnesses run as scripts)

REGRESSIONS = Path(__file__).parent / "regressions"
CASES = sorted(p for p in REGRESSIONS.glob("*/*") if p.is_file() and p.suffix != ".md")

# "<target>/<file>" -> (exception it raises today, where). Remove an entry when it is fixed.
OPEN: dict[str, tuple[type[BaseException], str]] = {}


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _params() -> list[object]:
    out: list[object] = []
    for path in CASES:
        marks = []
        if _case_id(path) in OPEN:
            raises, where = OPEN[_case_id(path)]
            marks.append(pytest.mark.xfail(strict=True, raises=raises, reason=f"open: {where}"))
        out.append(pytest.param(path, marks=marks, id=_case_id(path)))
    return out


def test_regression_files_name_real_targets_and_open_entries_exist() -> None:
    assert CASES, "tests/fuzz/regressions holds the crashing inputs found so far"
    for path in CASES:
        assert path.parent.name in targets.TARGETS, f"{path}: no target {path.parent.name!r}"
    assert set(OPEN) <= {_case_id(p) for p in CASES}


@pytest.mark.parametrize("path", _params())
def test_crashing_input_is_a_typed_error(path: Path) -> None:
    try:
        targets.TARGETS[path.parent.name](path.read_bytes())
    except FedteeError as exc:
        assert isinstance(exc.reason, Reason)
