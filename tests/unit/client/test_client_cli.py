from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, init_federation
from fedtee.cli.main import main
from fedtee.client import runtime
from fedtee.client.examples import digits
from fedtee.client.trainer import TrainerSpec


@pytest.fixture()
def fed(tmp_path: Path) -> Path:
    init_federation(
        InitOptions(directory=tmp_path, federation_id="f", with_sim=True, port=1)
    )  # port 1: nobody listens there
    text = (tmp_path / "client.toml").read_text()
    text = text.replace("max_reconnect_attempts = 8", "max_reconnect_attempts = 1")
    (tmp_path / "client.toml").write_text(text)
    return tmp_path


def test_client_start_reports_an_unreachable_server_with_exit_code_4(
    fed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["client", "start", "--config", str(fed / "client.toml")])
    assert code == 4
    out = capsys.readouterr()
    assert "code measurement" in out.out
    assert "server unreachable" in out.err


def test_client_start_rejects_a_sim_root_key_that_does_not_match(
    fed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = fed / "other"
    init_federation(InitOptions(directory=other, federation_id="g", with_sim=True))
    shutil.copy(other / "sim-root.key", fed / "sim-root.key")
    assert main(["client", "start", "--config", str(fed / "client.toml")]) == 2
    assert "config_invalid" in capsys.readouterr().err


def _measure_copy(
    root: Path, data: bytes, target: str = "fedtee_copy.digits:DigitsTrainer"
) -> bytes:
    pkg = root / "fedtee_copy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "digits.py").write_bytes(data)
    for mod in ("fedtee_copy", "fedtee_copy.digits"):
        sys.modules.pop(mod, None)
    sys.path.insert(0, str(root))
    try:
        return runtime.measure_trainer(TrainerSpec(target=target))
    finally:
        sys.path.remove(str(root))
        for mod in ("fedtee_copy", "fedtee_copy.digits"):
            sys.modules.pop(mod, None)


def test_one_changed_byte_in_the_trainer_file_changes_the_measurement(tmp_path: Path) -> None:
    source = Path(digits.__file__).read_bytes()
    changed_source = source.replace(b"0.5", b"0.6", 1)
    assert len(changed_source) == len(source) and changed_source != source
    same = _measure_copy(tmp_path / "a", source)
    again = _measure_copy(tmp_path / "b", source)
    changed = _measure_copy(tmp_path / "c", changed_source)
    other_factory = _measure_copy(tmp_path / "d", source, "fedtee_copy.digits:initial_arrays")
    assert same == again and len(same) == 48  # same bytes, same names: same measurement
    assert changed != same
    assert other_factory != same


# --- --tee auto / type = "auto" -------------------------------------------------------------


def test_tee_auto_picks_the_tpm_says_why_not_the_others_and_never_sim(
    fed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedtee.cli import client as cli_client

    root = tmp_path / "machine"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "tpmrm0").write_bytes(b"")
    monkeypatch.setattr(cli_client, "DEVICE_ROOT", str(root))
    # The config says sim and has a sim root: auto must still not pick sim.
    code = main(["client", "start", "--config", str(fed / "client.toml"), "--tee", "auto"])
    out = capsys.readouterr().out
    assert "--tee auto picked tpm" in out
    lines = [line for line in out.splitlines() if "not picked:" in line]
    assert any(str(root / "sys/kernel/config/tsm/report") in line for line in lines)
    assert any(str(root / "dev/attestation") in line for line in lines)
    assert any("sim: never picked" in line for line in lines)
    # The fake device node is no TPM: opening it (tcti device:/dev/tpmrm0) fails typed.
    assert code != 0


def test_tee_auto_with_nothing_present_names_the_devices_and_what_to_do(
    fed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedtee.cli import client as cli_client

    monkeypatch.setattr(cli_client, "DEVICE_ROOT", str(tmp_path / "bare"))
    text = (fed / "client.toml").read_text().replace('type = "sim"', 'type = "auto"')
    (fed / "client.toml").write_text(text)
    assert main(["client", "start", "--config", str(fed / "client.toml")]) == 2
    err = capsys.readouterr().err
    assert "device_absent" in err
    for path in ("sys/kernel/config/tsm/report", "dev/attestation", "dev/tpmrm0"):
        assert str(tmp_path / "bare" / path) in err
    assert "tpm_tis" in err and "--tee sim" in err


def test_type_auto_without_detection_is_a_config_error(fed: Path) -> None:
    from fedtee.client.config import parse_client_config
    from fedtee.errors import ConfigError

    text = (fed / "client.toml").read_text().replace('type = "sim"', 'type = "auto"')
    with pytest.raises(ConfigError, match="auto"):
        parse_client_config(text, base_dir=fed)


def test_type_auto_resolves_through_detection_on_a_fake_configfs_tree(
    fed: Path, tmp_path: Path
) -> None:
    from fedtee.attest.attesters import detect
    from fedtee.attest.model import TeeType
    from fedtee.attest.testing.configfs_tsm import FakeTsmKernel
    from fedtee.client.config import parse_client_config

    kernel = FakeTsmKernel(tmp_path / "machine", provider="sev_guest")
    text = (fed / "client.toml").read_text().replace('type = "sim"', 'type = "auto"')
    config = parse_client_config(
        text,
        base_dir=fed,
        detect_tee=lambda: detect(root=tmp_path / "machine", filesystem=kernel),
    )
    assert config.tee is TeeType.SEV_SNP


@pytest.mark.parametrize(
    ("content", "message"),
    [(b'[server]\naddress = "\xff"\n', "is not UTF-8 text"), (b"#" * 70_000, "is larger than")],
)
def test_client_config_that_is_not_utf8_or_too_large_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    bad = tmp_path / "client.toml"
    bad.write_bytes(content)
    assert main(["client", "start", "--config", str(bad)]) == 2
    assert message in capsys.readouterr().err
