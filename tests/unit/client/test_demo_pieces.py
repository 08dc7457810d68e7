from __future__ import annotations

from pathlib import Path

from fedtee.cli.demo import (
    MODIFIED_ID,
    MODIFIED_TRAINER,
    TAMPER_ID,
    DemoOptions,
    DemoOutcome,
    _write_client_configs,
)
from fedtee.cli.init import InitOptions
from fedtee.client.config import parse_client_config


def test_demo_writes_one_share_per_honest_client_and_two_cheaters(tmp_path: Path) -> None:
    opts = DemoOptions(clients=3, seed=7)
    init = InitOptions(directory=tmp_path, federation_id="d", with_sim=True, clients_per_round=4)
    paths = _write_client_configs(tmp_path, opts, init)
    configs = {
        cid: parse_client_config(p.read_text(), base_dir=tmp_path) for cid, p in paths.items()
    }
    honest = [c for cid, c in configs.items() if cid.startswith("client-")]
    assert sorted(c.partition for c in honest) == [0, 1, 2]
    assert all(c.num_partitions == 3 and c.seed == 7 for c in honest)
    assert configs[MODIFIED_ID].trainer.target == MODIFIED_TRAINER
    assert configs[TAMPER_ID].trainer.target == honest[0].trainer.target
    assert len({c.client_id for c in configs.values()}) == 5


def test_demo_succeeds_only_when_target_met_and_both_cheaters_rejected(tmp_path: Path) -> None:
    good = DemoOutcome(
        accuracy=0.93,
        tamper_rejected="update_digest_mismatch",
        modified_rejected="measurement_not_allowed",
        ledger_ok=True,
        rounds_completed=10,
        workdir=tmp_path,
    )
    assert good.success(0.90)
    assert not good.success(0.95)
    for change in (
        {"tamper_rejected": None},
        {"modified_rejected": None},
        {"ledger_ok": False},
        {"accuracy": None},
    ):
        assert not DemoOutcome(**{**good.__dict__, **change}).success(0.90)


def test_demo_tpm_configs_point_each_client_at_its_own_tpm_and_the_ek_chain(
    tmp_path: Path,
) -> None:
    from dataclasses import dataclass

    from fedtee.attest.model import TeeType
    from fedtee.cli.demo import EK_CA_DIR, client_ids

    @dataclass
    class _Tpm:  # what the config writer reads from a running swtpm
        tcti: str

    opts = DemoOptions(clients=2, tee="tpm")
    init = InitOptions(directory=tmp_path, federation_id="d", with_sim=False)
    tpms = {cid: _Tpm(f"swtpm:host=127.0.0.1,port={2000 + 2 * k}")
            for k, cid in enumerate(client_ids(opts))}  # fmt: skip
    paths = _write_client_configs(tmp_path, opts, init, tpms)
    configs = {
        cid: parse_client_config(p.read_text(), base_dir=tmp_path) for cid, p in paths.items()
    }
    assert {c.tee for c in configs.values()} == {TeeType.TPM}
    assert {cid: c.tcti for cid, c in configs.items()} == {cid: t.tcti for cid, t in tpms.items()}
    assert {c.ek_chain for c in configs.values()} == {
        (tmp_path / EK_CA_DIR / "issuercert.pem").resolve()
    }


def test_demo_tpm_policy_admits_only_the_honest_trainers_pcr23() -> None:
    from fedtee.attest.policy import Policy
    from fedtee.attest.verify.tpm import code_pcr_value
    from fedtee.cli.demo import tpm_policy

    text = tpm_policy(b"\x01" * 48)
    Policy.from_toml(text)  # parses with the real policy engine
    assert code_pcr_value(b"\x01" * 48).hex() in text
    assert code_pcr_value(b"\x02" * 48).hex() not in text
    assert "[tee.sim]" not in text


def test_demo_fails_when_an_honest_client_did_not_enrol_on_the_demo_tee(tmp_path: Path) -> None:
    outcome = DemoOutcome(
        accuracy=0.93,
        tamper_rejected="update_digest_mismatch",
        modified_rejected="measurement_not_allowed",
        ledger_ok=True,
        rounds_completed=10,
        workdir=tmp_path,
        honest_enrolled_on=("client-1",),
        honest_clients=2,
    )
    assert not outcome.success(0.90)
    assert DemoOutcome(
        **{**outcome.__dict__, "honest_enrolled_on": ("client-1", "client-2")}
    ).success(0.90)


def test_demo_tpm_without_swtpm_says_what_to_install(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # Only the venv's bin on PATH: no swtpm, swtpm_setup or swtpm_localca to be found.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "fedtee.cli.main", "demo", "--tee", "tpm", "--no-live",
           "--workdir", str(tmp_path / "w")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 1
    out = " ".join((done.stdout + done.stderr).split())
    assert "--tee tpm needs swtpm and tpm2-pytss" in out
    assert "swtpm-tools" in out and "scripts/setup.sh" in out
    assert not (tmp_path / "w" / "state").exists()  # nothing was started
