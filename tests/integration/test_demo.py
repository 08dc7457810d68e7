"""`fedtee demo` end to end: real processes, TLS gRPC on loopback, the sim TEE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_rejects_both_cheaters_with_their_reasons_and_the_ledger_verifies(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedtee.cli.main",
            "demo",
            "--rounds",
            "3",
            "--clients",
            "3",
            "--workdir",
            str(tmp_path),
            "--no-live",
            "--target",
            "0.80",  # 3 rounds is a smoke test; the 0.90 target is for 10 rounds
            "--timeout",
            "90",
            "--round-timeout",
            "6",  # the round the tamperer joins runs to this deadline
        ],
        capture_output=True,
        text=True,
        timeout=150,
        env=env,
        check=False,
    )
    out = done.stdout + done.stderr
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "logs").glob("*.log"))
    )
    assert done.returncode == 0, out + logs
    assert "cheater-tamper: rejected: update_digest_mismatch" in out
    assert "cheater-modified: rejected: measurement_not_allowed" in out
    assert "REJECTED cheater-modified: measurement_not_allowed" in out
    assert "ledger OK" in out
    assert "SIMULATED" in out
    # The modified client never trained: it was turned away before its first round.
    assert "update_accepted" not in (tmp_path / "logs" / "cheater-modified.log").read_text()
