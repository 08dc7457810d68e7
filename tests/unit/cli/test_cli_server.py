"""server.toml parsing (against what fedtee init writes) and the CLI registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.main import build_parser
from fedtee.cli.server import parse_server_config
from fedtee.errors import ConfigError


def test_parses_what_fedtee_init_writes(tmp_path: Path) -> None:
    opts = InitOptions(directory=tmp_path, federation_id="fed-x", with_sim=True, port=7443)
    cfg = parse_server_config(server_toml(opts), base_dir=tmp_path)
    assert cfg.federation_id == "fed-x"
    assert cfg.address == "127.0.0.1:7443"
    assert (cfg.rounds, cfg.clients_per_round, cfg.min_clients) == (10, 5, 3)
    assert cfg.tls_cert == tmp_path / "server.pem"
    assert cfg.state_dir == tmp_path / "state"
    assert cfg.sim_root == tmp_path / "sim-root.pem"
    assert cfg.policy == tmp_path / "policy.toml"
    assert cfg.initial_model == tmp_path / "initial-model.safetensors"
    assert cfg.train_config.get("lr") == "0.5"


def test_without_sim_root_trusts_no_sim(tmp_path: Path) -> None:
    opts = InitOptions(directory=tmp_path, federation_id="f", with_sim=False)
    assert parse_server_config(server_toml(opts), base_dir=tmp_path).sim_root is None


@pytest.mark.parametrize(
    "text",
    [
        "not toml [",
        '[federation]\nid="f"\nmodel="m:T"\ntypo=1\n[server]\naddress="h:1"\ntls_cert="c"\n'
        'tls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\ntls_key="k"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[rounds]\nmin_clients=4\nclients_per_round=2\n[server]\n'
        'address="h:1"\ntls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[rounds]\nrounds="10"\n[server]\naddress="h:1"\n'
        'tls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
        '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\n'
        'tls_key="k"\n[attestation]\npolicy="p"\n[rounds.config]\nlr=0.1\n',
        '[federation]\nid="f"\nmodel="m:T"\ninitial_model="x"\n[server]\naddress="h:1"\n'
        'tls_cert="c"\ntls_key="k"\n[attestation]\npolicy="p"\n',
    ],
)
def test_bad_configs_are_config_errors(text: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        parse_server_config(text, base_dir=tmp_path)


def test_server_start_help_explains_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "start", "--help"])
    out = capsys.readouterr().out
    assert "--config" in out and "--exit-after-finish" in out
