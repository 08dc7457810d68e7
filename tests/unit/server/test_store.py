"""Tests for fedtee.server.store, run against SQLite in memory and a SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedtee.errors import Reason, StorageError, UpdateRejected, VerificationError
from fedtee.server.store import RoundStatus, StateStore

FED = "fed-1"
NOW = 1_700_000_000_000
D0, D1, D2 = b"\0" * 32, b"\1" * 32, b"\2" * 32


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s = (
        StateStore.in_memory()
        if request.param == "memory"
        else StateStore.open(str(tmp_path / "state.db"))
    )
    s.create_federation(federation_id=FED, config={"rounds": 3}, now_ms=NOW)
    yield s
    s.close()


def _enroll(store: StateStore, client_id: str, platform: bytes | None = None, **kw: object) -> None:
    args: dict[str, object] = {
        "federation_id": FED,
        "client_id": client_id,
        "public_key": b"pk-" + client_id.encode(),
        "tee": "sim",
        "platform_id": platform if platform is not None else client_id.encode(),
        "measurement": b"\xaa" * 48,
        "hardware_backed": False,
        "credential_expires_ms": NOW + 60_000,
        "now_ms": NOW,
    }
    args.update(kw)
    store.enroll_client(**args)  # type: ignore[arg-type]


def _update(store: StateStore, client: str, rnd: int, receipt_hash: bytes, **kw: object) -> bool:
    args: dict[str, object] = {
        "federation_id": FED,
        "round": rnd,
        "client_id": client,
        "receipt": b"receipt-" + receipt_hash,
        "signature": b"sig",
        "receipt_hash": receipt_hash,
        "update_digest": D1,
        "artifact_path": f"/a/{client}",
        "num_examples": 10,
        "accepted": True,
        "now_ms": NOW,
    }
    args.update(kw)
    _, created = store.record_update(**args)  # type: ignore[arg-type]
    return created


def test_federation_is_created_once(store: StateStore) -> None:
    again = store.create_federation(federation_id=FED, config={"rounds": 99}, now_ms=NOW + 5)
    assert again.config == {"rounds": 3}
    assert again.created_ms == NOW
    assert store.get_federation("nope") is None


def test_nonce_is_single_use(store: StateStore) -> None:
    store.issue_nonce(value=b"n" * 32, tee="sim", expires_ms=NOW + 1000, context=b"ctx")
    record = store.consume_nonce(b"n" * 32, now_ms=NOW)
    assert record.context == b"ctx"
    assert record.tee == "sim"
    with pytest.raises(VerificationError) as err:
        store.consume_nonce(b"n" * 32, now_ms=NOW)
    assert err.value.reason is Reason.NONCE_REUSED


def test_unknown_and_expired_nonces(store: StateStore) -> None:
    with pytest.raises(VerificationError) as err:
        store.consume_nonce(b"x" * 32, now_ms=NOW)
    assert err.value.reason is Reason.NONCE_UNKNOWN
    store.issue_nonce(value=b"e" * 32, tee="sim", expires_ms=NOW)
    with pytest.raises(VerificationError) as err:
        store.consume_nonce(b"e" * 32, now_ms=NOW)
    assert err.value.reason is Reason.NONCE_EXPIRED
    # An expired nonce stays burnt.
    with pytest.raises(VerificationError) as err:
        store.consume_nonce(b"e" * 32, now_ms=NOW - 10)
    assert err.value.reason is Reason.NONCE_REUSED
    assert store.purge_nonces(now_ms=NOW) == 1


def test_concurrent_consumption_succeeds_once(store: StateStore) -> None:
    store.issue_nonce(value=b"c" * 32, tee="sim", expires_ms=NOW + 1000)
    results: list[str] = []

    def consume() -> None:
        try:
            store.consume_nonce(b"c" * 32, now_ms=NOW)
            results.append("ok")
        except VerificationError as exc:
            results.append(exc.reason.value)

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1
    assert results.count("nonce_reused") == 7


def test_enrolment_and_reenrolment(store: StateStore) -> None:
    _enroll(store, "a")
    _enroll(store, "a", public_key=b"new-key", credential_expires_ms=NOW + 120_000)
    client = store.get_client("a")
    assert client is not None
    assert client.public_key == b"new-key"
    assert client.credential_expires_ms == NOW + 120_000
    assert [c.id for c in store.list_clients(FED, usable_at_ms=NOW)] == ["a"]
    assert store.list_clients(FED, usable_at_ms=NOW + 200_000) == []


def test_same_platform_cannot_enrol_twice(store: StateStore) -> None:
    _enroll(store, "a", platform=b"P")
    with pytest.raises(VerificationError) as err:
        _enroll(store, "b", platform=b"P")
    assert err.value.reason is Reason.PLATFORM_ALREADY_ENROLLED
    store.deactivate("a")
    _enroll(store, "b", platform=b"P")  # the first enrolment ended; the platform is free
    assert store.get_client("b") is not None


def test_quarantined_client_stays_out(store: StateStore) -> None:
    _enroll(store, "a")
    store.quarantine("a", reason=Reason.UPDATE_DIGEST_MISMATCH, message="tampered")
    client = store.get_client("a")
    assert client is not None and client.quarantined
    assert client.quarantine_reason is Reason.UPDATE_DIGEST_MISMATCH
    assert store.list_clients(FED, usable_at_ms=NOW) == []
    with pytest.raises(VerificationError) as err:
        _enroll(store, "a")
    assert err.value.reason is Reason.CLIENT_QUARANTINED
    with pytest.raises(VerificationError) as err:  # nor under a new name on the same TEE
        _enroll(store, "a2", platform=b"a")
    assert err.value.reason is Reason.PLATFORM_ALREADY_ENROLLED


def test_round_lifecycle(store: StateStore) -> None:
    r = store.open_round(
        federation_id=FED,
        number=1,
        global_model_digest=D0,
        selected=["a", "b"],
        deadline_ms=NOW + 10,
        now_ms=NOW,
    )
    assert r.status == RoundStatus.OPEN and r.selected == ("a", "b")
    with pytest.raises(StorageError):
        store.open_round(
            federation_id=FED,
            number=2,
            global_model_digest=D0,
            selected=[],
            deadline_ms=NOW,
            now_ms=NOW,
        )
    done = store.complete_round(federation_id=FED, number=1, output_model_digest=D1, now_ms=NOW)
    assert done.status == RoundStatus.COMPLETED and done.output_model_digest == D1
    with pytest.raises(StorageError):
        store.complete_round(federation_id=FED, number=1, output_model_digest=D1, now_ms=NOW)
    store.open_round(
        federation_id=FED,
        number=2,
        global_model_digest=D1,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    failed = store.fail_round(federation_id=FED, number=2, now_ms=NOW)
    assert failed.status == RoundStatus.FAILED
    fed = store.get_federation(FED)
    assert fed is not None and fed.current_round == 2
    assert [x.number for x in store.rounds(FED)] == [1, 2]


def test_updates_are_idempotent_and_duplicates_rejected(store: StateStore) -> None:
    store.open_round(
        federation_id=FED,
        number=1,
        global_model_digest=D0,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    assert _update(store, "a", 1, b"h1" * 16) is True
    assert _update(store, "a", 1, b"h1" * 16) is False
    with pytest.raises(UpdateRejected) as err:
        _update(store, "a", 1, b"h2" * 16)
    assert err.value.reason is Reason.UPDATE_DUPLICATE
    assert store.count_updates(FED, 1) == 1
    assert [u.client_id for u in store.updates(FED, 1)] == ["a"]


def test_replayed_receipt_and_closed_round(store: StateStore) -> None:
    store.open_round(
        federation_id=FED,
        number=1,
        global_model_digest=D0,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    _update(store, "a", 1, b"h1" * 16)
    store.complete_round(federation_id=FED, number=1, output_model_digest=D1, now_ms=NOW)
    with pytest.raises(UpdateRejected) as err:
        _update(store, "b", 1, b"h3" * 16)
    assert err.value.reason is Reason.ROUND_CLOSED
    store.open_round(
        federation_id=FED,
        number=2,
        global_model_digest=D1,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    with pytest.raises(UpdateRejected) as err:
        _update(store, "a", 2, b"h1" * 16)
    assert err.value.reason is Reason.RECEIPT_REPLAYED


def test_rejected_updates_are_not_counted(store: StateStore) -> None:
    store.open_round(
        federation_id=FED,
        number=1,
        global_model_digest=D0,
        selected=["a", "b"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    _update(store, "a", 1, b"h1" * 16)
    _update(store, "b", 1, b"h2" * 16, accepted=False)
    assert store.count_updates(FED, 1) == 1
    assert len(store.updates(FED, 1, accepted_only=False)) == 2


def test_rejections_are_recorded_with_reasons(store: StateStore) -> None:
    store.record_rejection(
        federation_id=FED,
        reason=Reason.MEASUREMENT_NOT_ALLOWED,
        message="bad code",
        client_id="x",
        now_ms=NOW,
    )
    store.record_rejection(
        federation_id=FED,
        reason=Reason.UPDATE_DIGEST_MISMATCH,
        message="tampered",
        client_id="y",
        round=2,
        now_ms=NOW,
    )
    got = store.rejections(FED)
    assert [(r.client_id, r.reason, r.round) for r in got] == [
        ("x", Reason.MEASUREMENT_NOT_ALLOWED, None),
        ("y", Reason.UPDATE_DIGEST_MISMATCH, 2),
    ]


def test_resume_point(store: StateStore) -> None:
    assert store.resume_point(FED).global_model_digest is None
    store.open_round(
        federation_id=FED,
        number=1,
        global_model_digest=D0,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    store.complete_round(federation_id=FED, number=1, output_model_digest=D1, now_ms=NOW)
    point = store.resume_point(FED)
    assert point.last_completed is not None and point.last_completed.number == 1
    assert point.open_round is None
    assert point.global_model_digest == D1
    store.open_round(
        federation_id=FED,
        number=2,
        global_model_digest=D1,
        selected=["a"],
        deadline_ms=NOW,
        now_ms=NOW,
    )
    _update(store, "a", 2, b"h1" * 16)
    point = store.resume_point(FED)
    assert point.open_round is not None and point.open_round.number == 2
    assert [u.client_id for u in point.accepted_in_open_round] == ["a"]


_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from fedtee.server.store import StateStore
    s = StateStore.open(sys.argv[1])
    F, NOW = "fed-1", 1
    s.create_federation(federation_id=F, config={}, now_ms=NOW)
    s.open_round(federation_id=F, number=1, global_model_digest=b"\\0" * 32, selected=["a", "b"],
                 deadline_ms=NOW, now_ms=NOW)
    for i, c in enumerate(["a", "b"]):
        s.record_update(federation_id=F, round=1, client_id=c, receipt=b"r", signature=b"s",
                        receipt_hash=bytes([i]) * 32, update_digest=b"\\1" * 32,
                        artifact_path="p", num_examples=5, accepted=True, now_ms=NOW)
    s.complete_round(federation_id=F, number=1, output_model_digest=b"\\2" * 32, now_ms=NOW)
    s.open_round(federation_id=F, number=2, global_model_digest=b"\\2" * 32, selected=["a", "b"],
                 deadline_ms=NOW, now_ms=NOW)
    s.record_update(federation_id=F, round=2, client_id="a", receipt=b"r", signature=b"s",
                    receipt_hash=b"\\7" * 32, update_digest=b"\\1" * 32,
                    artifact_path="p", num_examples=5, accepted=True, now_ms=NOW)
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_mid_round_loses_no_accepted_update(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(db)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "committed" in proc.stdout
    store = StateStore.open(str(db))
    point = store.resume_point("fed-1")
    assert point.last_completed is not None and point.last_completed.number == 1
    assert point.last_completed.output_model_digest == b"\2" * 32
    assert point.open_round is not None and point.open_round.number == 2
    assert [u.receipt_hash for u in point.accepted_in_open_round] == [b"\7" * 32]
    assert point.global_model_digest == b"\2" * 32
    store.close()


def test_unwritable_location_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        StateStore.open(str(tmp_path / "missing-dir" / "state.db"))


def test_wal_mode_on_file_store(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    StateStore.open(str(db)).close()
    import sqlite3

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()
    assert os.path.exists(db)


def test_federation_status(store: StateStore) -> None:
    from fedtee.server.store import FederationStatus

    fed = store.get_federation(FED)
    assert fed is not None and fed.status is FederationStatus.RUNNING
    store.set_federation_status(FED, FederationStatus.FINISHED)
    fed = store.get_federation(FED)
    assert fed is not None and fed.status is FederationStatus.FINISHED


_UPLOAD_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from fedtee.server.artifacts import ArtifactStore
    from fedtee.server.store import StateStore
    root = Path(sys.argv[1])
    arts = ArtifactStore(root / "artifacts")
    s = StateStore.open(str(root / "state.db"))
    F = "fed-1"
    s.create_federation(federation_id=F, config={}, now_ms=1)
    s.open_round(federation_id=F, number=1, global_model_digest=b"\\0" * 32,
                 selected=["a", "b"], deadline_ms=1, now_ms=1)
    # Client a: the artifact is made durable first, then the update row is committed.
    art = arts.put(b"update of a" * 1000)
    s.record_update(federation_id=F, round=1, client_id="a", receipt=b"r", signature=b"s",
                    receipt_hash=b"\\1" * 32, update_digest=art.digest,
                    artifact_path=str(art.path), num_examples=3, accepted=True, now_ms=1)
    # Client b: killed mid-upload, before commit.
    w = arts.writer()
    w.write(b"half of b's update")
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_mid_upload_keeps_accepted_updates_and_their_files(tmp_path: Path) -> None:
    from fedtee.server.artifacts import ArtifactStore
    from fedtee.tensors import digest

    proc = subprocess.run(
        [sys.executable, "-c", _UPLOAD_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "ready" in proc.stdout
    store = StateStore.open(str(tmp_path / "state.db"))
    arts = ArtifactStore(tmp_path / "artifacts")
    assert arts.sweep() == 1  # b's partial upload, never recorded
    point = store.resume_point("fed-1")
    assert [u.client_id for u in point.accepted_in_open_round] == ["a"]
    for u in point.accepted_in_open_round:
        assert digest(arts.read_bytes(u.update_digest)) == u.update_digest
        assert Path(u.artifact_path).is_file()
    store.close()


def test_a_second_process_can_read_a_live_store(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    writer = StateStore.open(db)
    writer.create_federation(federation_id=FED, config={}, now_ms=NOW)
    code = (
        "import sys; from fedtee.server.store import StateStore;"
        "s = StateStore.open(sys.argv[1]); print(s.get_federation('fed-1').id)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, db], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == FED
    writer.close()
