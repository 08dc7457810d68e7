"""``fedtee server forget-client``: clears a client's stored TPM counters in the state store
named by server.toml (the gate side, with a real power-cycled swtpm, is in
tests/integration/test_server_tpm_reset.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.main import build_parser, main
from fedtee.server.store import StateStore, TpmCounters

NOW = 1_700_000_000_000


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "server.toml"
    opts = InitOptions(directory=tmp_path, federation_id="fed-x", with_sim=False)
    path.write_text(server_toml(opts))
    return path


def _state_with_tpm_client(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    store = StateStore.open(str(tmp_path / "state" / "state.db"))
    try:
        store.create_federation(federation_id="fed-x", config={}, now_ms=NOW)
        store.enroll_client(
            federation_id="fed-x", client_id="tpm-1", public_key=b"pk", tee="tpm",
            platform_id=b"\xa0" * 32, measurement=b"\x11" * 32, hardware_backed=True,
            credential_expires_ms=NOW + 1000, now_ms=NOW,
            tpm_counters=TpmCounters(platform_id=b"\xa0" * 32, ak_name=b"", reset_count=2,
                                     restart_count=0, clock=10),
        )  # fmt: skip
    finally:
        store.close()


def test_forget_client_clears_the_stored_counters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    _state_with_tpm_client(tmp_path)

    assert main(["server", "forget-client", "tpm-1", "--config", str(config)]) == 0
    assert main(["server", "forget-client", "tpm-9", "--config", str(config)]) == 1

    out = capsys.readouterr().out
    assert "cleared the TPM counters of 'tpm-1'" in out
    assert "'tpm-9' has no stored TPM counters" in out
    store = StateStore.open(str(tmp_path / "state" / "state.db"))
    try:
        counters = store.tpm_counters("tpm-1")
    finally:
        store.close()
    assert counters is not None and counters.cleared_ms is not None and counters.reset_count == 2


def test_forget_client_does_not_create_a_missing_state_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path)
    assert main(["server", "forget-client", "tpm-1", "--config", str(config)]) == 2
    assert "no state store" in capsys.readouterr().err
    assert not (tmp_path / "state" / "state.db").exists()


def test_forget_client_help_explains_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["server", "forget-client", "--help"])
    out = capsys.readouterr().out
    assert "tpm_reset" in out and "--config" in out and "CLIENT_ID" in out
