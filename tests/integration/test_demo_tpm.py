"""`fedtee demo --tee tpm` end to end: one real swtpm per client, real TPM quotes, real
processes over TLS gRPC on loopback; the server trusts the demo's local EK CA explicitly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedtee.attest.swtpm import swtpm_missing

_WHY = swtpm_missing()
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.slow,
    pytest.mark.skipif(_WHY is not None, reason=f"swtpm path unavailable: {_WHY}"),
]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (e.g. a swtpm state dir)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def test_demo_tpm_enrols_every_client_on_a_verified_quote_and_rejects_the_cheaters(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable, "-m", "fedtee.cli.main", "demo", "--tee", "tpm",
        "--rounds", "2", "--clients", "2", "--workdir", str(tmp_path), "--no-live",
        "--target", "0.70",  # 2 rounds is a smoke test; the 0.90 target is for 10 rounds
        "--timeout", "120", "--round-timeout", "6",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env=env, check=False)
    out = done.stdout + done.stderr
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
        for p in sorted((tmp_path / "logs").glob("*.log"))
    )
    assert done.returncode == 0, out + logs
    assert "cheater-tamper: rejected: update_digest_mismatch" in out
    assert "cheater-modified: rejected: measurement_not_allowed" in out
    assert "honest clients enrolled on a verified TPM quote: 2 of 2" in out
    # Both directions: every client verified the server's own TPM quote before enrolling.
    assert "server attested to honest clients" in " ".join(out.split())
    for cid in ("client-1", "client-2", "cheater-tamper", "cheater-modified"):
        log = (tmp_path / "logs" / f"{cid}.log").read_text()
        assert f"[{cid}] server_attested tpm TEE; affirming" in log, log
        assert log.index("server_attested") < log.index("enrol")  # before it sent anything
    assert "ledger OK" in out
    assert "SIMULATED" not in out
    # Every swtpm the demo started is gone.
    assert _processes_mentioning(str(tmp_path / "tpm")) == []

    # What the server recorded (real SQLite): every enrolled client is a TPM client whose
    # platform is its EK, each on its own TPM, all with the honest trainer's PCR 23.
    from fedtee.attest.verify.tpm import code_pcr_value
    from fedtee.cli.demo import HONEST_TRAINER, MODIFIED_ID
    from fedtee.cli.init import trainer_measurement
    from fedtee.server.app import StatePaths
    from fedtee.server.store import StateStore

    store = StateStore.open(str(StatePaths.of(tmp_path / "state").database))
    try:
        clients = {c.id: c for c in store.list_clients("fedtee-demo")}
        rejections = [(r.client_id, r.reason.value) for r in store.rejections("fedtee-demo")]
    finally:
        store.close()
    assert set(clients) == {"client-1", "client-2", "cheater-tamper"}
    assert {c.tee for c in clients.values()} == {"tpm"}
    assert len({c.platform_id for c in clients.values()}) == 3  # three distinct EKs
    expected_pcr = code_pcr_value(trainer_measurement(HONEST_TRAINER))
    assert {c.measurement for c in clients.values()} == {expected_pcr}
    assert (MODIFIED_ID, "measurement_not_allowed") in rejections
    server_toml = (tmp_path / "server.toml").read_text()
    assert "tpm_ek_ca" in server_toml and "[server_attestation]" in server_toml
