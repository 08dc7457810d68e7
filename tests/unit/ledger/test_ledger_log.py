"""Tests for fedtee.ledger.log: the hash-chained, checkpointed federation ledger."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee import identity
from fedtee.errors import LedgerError, Reason
from fedtee.ledger.log import (
    LedgerWriter,
    canonical_json,
    entry_hash,
    verify_ledger,
)
from fedtee.ledger.receipts import Receipt, SignedReceipt, receipt_hash, sign_receipt

FED = "fed-1"
NOW = 1_700_000_000_000
SERVER = identity.generate()
SERVER_DER = identity.public_key_der(SERVER)
M0, M1, M2 = b"\x10" * 32, b"\x11" * 32, b"\x12" * 32
MEAS = b"\xab" * 48


@dataclass
class Fixture:
    path: Path
    writer: LedgerWriter
    keys: dict[str, identity.PrivateKey]


def _signed(client: str, key: identity.PrivateKey, rnd: int, model: bytes, n: int) -> SignedReceipt:
    receipt = Receipt(
        federation_id=FED,
        round=rnd,
        client_id=client,
        global_model_digest=model,
        update_digest=bytes([n]) * 32,
        num_examples=n,
        measurement=MEAS,
        metrics={"loss": 0.5},
        created_unix_ms=NOW,
    )
    return sign_receipt(receipt, key)


def _build(tmp_path: Path) -> Fixture:
    path = tmp_path / "ledger.jsonl"
    w = LedgerWriter.create(path, federation_id=FED, server_key=SERVER, now_ms=NOW)
    keys = {c: identity.generate() for c in ("a", "b", "c")}
    for c in ("a", "b"):
        w.enrolment(
            client_id=c,
            public_key=identity.public_key_der(keys[c]),
            tee="sim",
            hardware_backed=False,
            attestation_json=json.dumps({"status": "affirming"}),
            now_ms=NOW,
        )
    w.rejection(client_id="c", reason=Reason.MEASUREMENT_NOT_ALLOWED, message="x", now_ms=NOW)
    r1 = [_signed("a", keys["a"], 1, M0, 10), _signed("b", keys["b"], 1, M0, 20)]
    for c, s in zip("ab", r1, strict=True):
        w.receipt(client_id=c, round=1, signed=s, accepted=True, now_ms=NOW)
    w.aggregation(
        round=1,
        inputs=[receipt_hash(s) for s in r1],
        input_model_digest=M0,
        output_model_digest=M1,
        strategy="fedavg",
        now_ms=NOW,
    )
    w.checkpoint(now_ms=NOW)
    good = _signed("a", keys["a"], 2, M1, 11)
    bad = _signed("b", keys["b"], 2, M1, 21)
    w.receipt(client_id="a", round=2, signed=good, accepted=True, now_ms=NOW)
    w.receipt(
        client_id="b",
        round=2,
        signed=bad,
        accepted=False,
        now_ms=NOW,
        reason=Reason.UPDATE_DIGEST_MISMATCH,
    )
    w.aggregation(
        round=2,
        inputs=[receipt_hash(good)],
        input_model_digest=M1,
        output_model_digest=M2,
        strategy="fedavg",
        now_ms=NOW,
    )
    w.checkpoint(now_ms=NOW)
    return Fixture(path=path, writer=w, keys=keys)


def _lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(x) for x in data.splitlines()]


def _rehash(entries: list[dict[str, object]]) -> bytes:
    """Rebuild a self-consistent chain, as a forger without the server key would."""
    prev_hash = "0" * 64
    out = []
    for i, e in enumerate(entries):
        e["seq"], e["prev_hash"] = i, prev_hash
        e["hash"] = entry_hash(seq=i, prev_hash=prev_hash, kind=e["kind"], body=e["body"])  # type: ignore[arg-type]
        prev_hash = e["hash"]  # type: ignore[assignment]
        out.append(canonical_json(e))
    return b"\n".join(out) + b"\n"


def test_valid_ledger_verifies_with_lineage(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    report = verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert report.federation_id == FED
    assert report.entries == 12
    assert report.unsigned_tail == 0
    assert report.enrolled_clients == ("a", "b")
    assert report.rejections == 1 and report.rejected_receipts == 1
    assert report.final_model_digest == M2.hex()
    assert [r.round for r in report.lineage] == [1, 2]
    assert [c.client_id for c in report.lineage[0].contributions] == ["a", "b"]
    assert [c.num_examples for c in report.lineage[1].contributions] == [11]
    assert report.lineage[1].input_model_digest == M1.hex()
    assert not report.key_from_ledger
    assert report.to_json()["final_model_digest"] == M2.hex()


def test_unpinned_key_is_reported(tmp_path: Path) -> None:
    report = verify_ledger(_build(tmp_path).path.read_bytes(), server_public_key=None)
    assert report.key_from_ledger
    assert report.to_json()["server_key_source"].startswith("ledger genesis")


def test_every_single_byte_change_is_caught(tmp_path: Path) -> None:
    data = _build(tmp_path).path.read_bytes()
    for pos in range(len(data)):
        mutated = bytearray(data)
        mutated[pos] ^= 0x01 if pos % 2 else 0x20
        with pytest.raises(LedgerError) as err:
            verify_ledger(bytes(mutated), server_public_key=SERVER_DER)
        assert err.value.reason in {
            Reason.LEDGER_MALFORMED,
            Reason.LEDGER_CHAIN_BROKEN,
            Reason.LEDGER_SIGNATURE_INVALID,
            Reason.LEDGER_LINEAGE_BROKEN,
        }


def test_deleting_or_swapping_entries_breaks_the_chain(tmp_path: Path) -> None:
    lines = _build(tmp_path).path.read_bytes().splitlines(keepends=True)
    for bad in (
        lines[:3] + lines[4:],
        [*lines[:3], lines[4], lines[3], *lines[5:]],
        [lines[0], *lines],
    ):
        with pytest.raises(LedgerError) as err:
            verify_ledger(b"".join(bad), server_public_key=SERVER_DER)
        assert err.value.reason is Reason.LEDGER_CHAIN_BROKEN


def test_rehashed_forgery_fails_the_checkpoint_signature(tmp_path: Path) -> None:
    entries = _lines(_build(tmp_path).path.read_bytes())
    entries[3]["body"]["message"] = "nothing to see"  # type: ignore[index]
    # The forger fixes every hash and even the checkpoint heads, but cannot re-sign.
    prev_hash = "0" * 64
    for i, e in enumerate(entries):
        if e["kind"] == "checkpoint":
            e["body"]["head"] = prev_hash  # type: ignore[index]
        e["seq"], e["prev_hash"] = i, prev_hash
        e["hash"] = entry_hash(seq=i, prev_hash=prev_hash, kind=e["kind"], body=e["body"])  # type: ignore[arg-type]
        prev_hash = e["hash"]  # type: ignore[assignment]
    forged = b"\n".join(canonical_json(e) for e in entries) + b"\n"
    with pytest.raises(LedgerError) as err:
        verify_ledger(forged, server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_SIGNATURE_INVALID


def test_other_server_key_is_rejected(tmp_path: Path) -> None:
    data = _build(tmp_path).path.read_bytes()
    other = identity.public_key_der(identity.generate())
    with pytest.raises(LedgerError) as err:
        verify_ledger(data, server_public_key=other)
    assert err.value.reason is Reason.LEDGER_SIGNATURE_INVALID


def test_receipt_signed_by_another_key(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    forged = _signed("a", identity.generate(), 3, M2, 5)
    fx.writer.receipt(client_id="a", round=3, signed=forged, accepted=True, now_ms=NOW)
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_SIGNATURE_INVALID


def test_receipt_from_unenrolled_client(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    s = _signed("c", fx.keys["c"], 3, M2, 5)
    fx.writer.receipt(client_id="c", round=3, signed=s, accepted=True, now_ms=NOW)
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_LINEAGE_BROKEN


def test_receipt_filed_under_another_round(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    s = _signed("a", fx.keys["a"], 3, M2, 5)
    fx.writer.receipt(client_id="a", round=4, signed=s, accepted=True, now_ms=NOW)
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_LINEAGE_BROKEN


@pytest.mark.parametrize("case", ["rejected", "other_round", "wrong_model", "unknown", "chain"])
def test_aggregation_inputs_must_be_accepted_receipts_of_the_round(
    tmp_path: Path, case: str
) -> None:
    fx = _build(tmp_path)
    w, k = fx.writer, fx.keys
    ok = _signed("a", k["a"], 3, M2, 7)
    rejected = _signed("b", k["b"], 3, M2, 8)
    stale = _signed("c", k["c"], 3, M0, 9)  # trained from a model that is not round 3's input
    w.enrolment(
        client_id="c",
        public_key=identity.public_key_der(k["c"]),
        tee="sim",
        hardware_backed=False,
        attestation_json="{}",
        now_ms=NOW,
    )
    w.receipt(client_id="a", round=3, signed=ok, accepted=True, now_ms=NOW)
    w.receipt(client_id="b", round=3, signed=rejected, accepted=False, now_ms=NOW)
    w.receipt(client_id="c", round=3, signed=stale, accepted=True, now_ms=NOW)
    inputs = {
        "rejected": [receipt_hash(rejected)],
        "unknown": [b"\x99" * 32],
        "wrong_model": [receipt_hash(ok), receipt_hash(stale)],
    }.get(case, [receipt_hash(ok)])
    rnd = 4 if case == "other_round" else 3
    model = M1 if case == "chain" else M2  # "chain": not the previous aggregation's output
    w.aggregation(
        round=rnd,
        inputs=inputs,
        input_model_digest=model,
        output_model_digest=b"\x13" * 32,
        strategy="fedavg",
        now_ms=NOW,
    )
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_LINEAGE_BROKEN


def test_aggregation_of_accepted_receipts_extends_lineage(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    ok = _signed("a", fx.keys["a"], 3, M2, 7)
    fx.writer.receipt(client_id="a", round=3, signed=ok, accepted=True, now_ms=NOW)
    fx.writer.aggregation(
        round=3,
        inputs=[receipt_hash(ok)],
        input_model_digest=M2,
        output_model_digest=b"\x13" * 32,
        strategy="fedavg",
        now_ms=NOW,
    )
    report = verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert report.final_model_digest == (b"\x13" * 32).hex()
    assert len(report.lineage) == 3


def test_malformed_inputs(tmp_path: Path) -> None:
    data = _build(tmp_path).path.read_bytes()
    for bad in (
        b"",
        data[:-1],
        data + b"\n",
        data.replace(b'"kind":"receipt"', b'"kind":"x"', 1),
        b"\xff\n",
        b"[]\n",
    ):
        with pytest.raises(LedgerError):
            verify_ledger(bad, server_public_key=SERVER_DER)
    entries = _lines(data)
    entries[1]["body"]["extra"] = 1  # type: ignore[index]
    with pytest.raises(LedgerError) as err:
        verify_ledger(_rehash(entries), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_MALFORMED


def test_writer_reopens_after_torn_line_and_continues(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    with open(fx.path, "ab") as fh:
        fh.write(b'{"body":{"cli')  # crash mid-append
    w = LedgerWriter.open(fx.path, server_key=SERVER)
    assert w.head.seq == 11
    w.rejection(reason=Reason.NONCE_REUSED, message="late", now_ms=NOW)
    w.checkpoint(now_ms=NOW)
    report = verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert report.entries == 14 and report.unsigned_tail == 0


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    with pytest.raises(LedgerError):
        LedgerWriter.create(fx.path, federation_id=FED, server_key=SERVER, now_ms=NOW)


def test_unsigned_tail_is_counted(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    fx.writer.rejection(reason=Reason.NONCE_EXPIRED, message="m", now_ms=NOW)
    report = verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert report.unsigned_tail == 1


_SAMPLE: list[bytes] = []


def _sample_ledger() -> bytes:
    if not _SAMPLE:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            _SAMPLE.append(_build(Path(d)).path.read_bytes())
    return _SAMPLE[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_bytes_raise_only_ledger_error(data: bytes) -> None:
    with pytest.raises(LedgerError):
        verify_ledger(data, server_public_key=None)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_ledger_raises_only_ledger_error(data: st.DataObject) -> None:
    ledger = bytearray(_sample_ledger())
    start = data.draw(st.integers(0, len(ledger) - 1))
    length = data.draw(st.integers(1, 16))
    replacement = data.draw(st.binary(min_size=0, max_size=16))
    mutated = bytes(ledger[:start]) + replacement + bytes(ledger[start + length :])
    if mutated == bytes(ledger):
        return
    with pytest.raises(LedgerError):
        verify_ledger(mutated, server_public_key=SERVER_DER)


def _enrol(w: LedgerWriter, client: str, key: identity.PrivateKey, attestation: str) -> None:
    w.enrolment(
        client_id=client,
        public_key=identity.public_key_der(key),
        tee="sim",
        hardware_backed=False,
        attestation_json=attestation,
        now_ms=NOW,
    )


def test_attestation_status_is_carried_into_lineage(tmp_path: Path) -> None:
    report = verify_ledger(_build(tmp_path).path.read_bytes(), server_public_key=SERVER_DER)
    assert {c.attestation_status for r in report.lineage for c in r.contributions} == {"affirming"}


def test_receipt_accepted_from_contraindicated_client_breaks_lineage(tmp_path: Path) -> None:
    fx = _build(tmp_path)
    _enrol(fx.writer, "c", fx.keys["c"], json.dumps({"status": "contraindicated"}))
    s = _signed("c", fx.keys["c"], 3, M2, 5)
    fx.writer.receipt(client_id="c", round=3, signed=s, accepted=True, now_ms=NOW)
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_LINEAGE_BROKEN


@pytest.mark.parametrize("attestation", ["not json", "[1]", '{"status": 3}', '{"x": NaN}'])
def test_enrolment_attestation_must_be_a_json_object(tmp_path: Path, attestation: str) -> None:
    fx = _build(tmp_path)
    _enrol(fx.writer, "c", fx.keys["c"], attestation)
    with pytest.raises(LedgerError) as err:
        verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER)
    assert err.value.reason is Reason.LEDGER_MALFORMED


def test_failed_append_leaves_no_torn_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    import fedtee.ledger.log as log_module
    from fedtee.errors import StorageError

    fx = _build(tmp_path)
    before = fx.path.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))  # a short write, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(log_module.os, "write", half_then_full)
    with pytest.raises(StorageError):
        fx.writer.rejection(reason=Reason.NONCE_REUSED, message="m", now_ms=NOW)
    monkeypatch.undo()
    assert fx.path.read_bytes() == before
    fx.writer.rejection(reason=Reason.NONCE_REUSED, message="m", now_ms=NOW)  # goes on cleanly
    assert verify_ledger(fx.path.read_bytes(), server_public_key=SERVER_DER).entries == 13
