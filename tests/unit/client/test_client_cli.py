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
