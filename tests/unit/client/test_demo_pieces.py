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
