"""Tests for ``fedtee ledger verify``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from fedtee import identity
from fedtee.cli.main import main
from fedtee.errors import Reason
from fedtee.ledger.log import LedgerWriter
from fedtee.ledger.receipts import Receipt, receipt_hash, sign_receipt

NOW = 1_700_000_000_000
SERVER = identity.generate()


def _ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.jsonl"
    w = LedgerWriter.create(path, federation_id="f", server_key=SERVER, now_ms=NOW)
    key = identity.generate()
    w.enrolment(
        client_id="alice",
        public_key=identity.public_key_der(key),
        tee="sim",
        hardware_backed=False,
        attestation_json="{}",
        now_ms=NOW,
    )
    signed = sign_receipt(
        Receipt(
            federation_id="f",
            round=1,
            client_id="alice",
            global_model_digest=b"\0" * 32,
            update_digest=b"\1" * 32,
            num_examples=42,
            measurement=b"\xaa" * 48,
        ),
        key,
    )
    w.receipt(client_id="alice", round=1, signed=signed, accepted=True, now_ms=NOW)
    w.aggregation(
        round=1,
        inputs=[receipt_hash(signed)],
        input_model_digest=b"\0" * 32,
        output_model_digest=b"\2" * 32,
        strategy="fedavg",
        now_ms=NOW,
    )
    w.checkpoint(now_ms=NOW)
    return path


def _key_pem(tmp_path: Path, key: identity.PrivateKey) -> Path:
    pem = tmp_path / "server.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pem


def test_verify_prints_lineage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _ledger(tmp_path)
    code = main(["ledger", "verify", str(path), "--server-key", str(_key_pem(tmp_path, SERVER))])
    out = capsys.readouterr().out
    assert code == 0
    assert "ledger OK" in out
    assert ("02" * 32) in out
    assert "alice: 42 examples" in out
    assert "SIMULATED" in out
    assert "WARNING: server key" not in out


def test_verify_json_and_unpinned_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _ledger(tmp_path)
    assert main(["ledger", "verify", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["lineage"][0]["contributions"][0]["client_id"] == "alice"
    assert report["server_key_source"].startswith("ledger genesis")


def test_one_changed_byte_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _ledger(tmp_path)
    data = bytearray(path.read_bytes())
    data[data.index(b'"alice"') + 2] ^= 1  # "alice" -> "amice" in the enrolment
    path.write_bytes(bytes(data))
    assert main(["ledger", "verify", str(path), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["reason"].startswith("ledger_")


def test_wrong_server_key_exits_non_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _ledger(tmp_path)
    pem = _key_pem(tmp_path, identity.generate())
    assert main(["ledger", "verify", str(path), "--server-key", str(pem)]) == 1
    assert Reason.LEDGER_SIGNATURE_INVALID.value in capsys.readouterr().err


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["ledger", "verify", str(tmp_path / "nope")]) == 2
