"""Inputs that once crashed a parser (found by fuzzing) must now raise only typed errors.

Each file under ``tests/fuzz/regressions/<target>/`` is fed to ``fuzz/targets.py``'s target of
that name; see docs/fuzzing.md for how files get here.
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


def test_regression_folders_name_real_targets() -> None:
    for folder in REGRESSIONS.iterdir() if REGRESSIONS.exists() else ():
        if folder.is_dir():
            assert folder.name in targets.TARGETS, f"{folder}: no target {folder.name!r}"


def test_crashing_inputs_are_now_typed_errors() -> None:
    # One test over every file (none yet is a pass, not a skip); the message names the file.
    for path in CASES:
        data = path.read_bytes()
        try:
            targets.TARGETS[path.parent.name](data)
        except FedteeError as exc:
            assert isinstance(exc.reason, Reason), path
        except Exception as exc:
            pytest.fail(f"{path.relative_to(ROOT)}: {type(exc).__name__}: {exc}")
