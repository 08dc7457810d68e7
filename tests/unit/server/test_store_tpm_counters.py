"""The store's TPM counters: written with the enrolment, cleared by an operator, and an
older state database without the table still opens (the table is added, nothing lost)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedtee.errors import Reason, VerificationError
from fedtee.server.store import StateStore, TpmCounters

FED = "fed-1"
NOW = 1_700_000_000_000
EK_A, EK_B = b"\xa0" * 32, b"\xb0" * 32


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s = (
        StateStore.in_memory()
        if request.param == "memory"
        else StateStore.open(str(tmp_path / "state.db"))
    )
    s.create_federation(federation_id=FED, config={}, now_ms=NOW)
    yield s
    s.close()


def _counters(reset: int = 3, restart: int = 0, clock: int = 5000, ek: bytes = EK_A) -> TpmCounters:
    return TpmCounters(
        platform_id=ek, ak_name=b"\x00\x0b" + b"\x11" * 32, reset_count=reset,
        restart_count=restart, clock=clock,
    )  # fmt: skip


def _enroll(store: StateStore, client_id: str, *, now_ms: int = NOW, **kw: object) -> None:
    args: dict[str, object] = {
        "federation_id": FED,
        "client_id": client_id,
        "public_key": b"pk-" + client_id.encode() + str(now_ms).encode(),
        "tee": "tpm",
        "platform_id": EK_A,
        "measurement": b"\xaa" * 32,
        "hardware_backed": True,
        "credential_expires_ms": now_ms + 60_000,
        "now_ms": now_ms,
    }
    args.update(kw)
    store.enroll_client(**args)  # type: ignore[arg-type]


def test_counters_are_stored_with_the_enrolment_and_replaced_by_the_next(
    store: StateStore,
) -> None:
    assert store.tpm_counters("tpm-1") is None
    _enroll(store, "tpm-1", tpm_counters=_counters(clock=5000))
    first = store.tpm_counters("tpm-1")
    assert first is not None
    assert (first.platform_id, first.reset_count, first.restart_count, first.clock) == (
        EK_A, 3, 0, 5000,
    )  # fmt: skip
    assert (first.recorded_ms, first.cleared_ms) == (NOW, None)
    assert first.as_claims() == {"reset_count": 3, "restart_count": 0, "clock": 5000}

    _enroll(store, "tpm-1", now_ms=NOW + 10, tpm_counters=_counters(reset=4, clock=90))
    second = store.tpm_counters("tpm-1")
    assert second is not None and (second.reset_count, second.clock, second.recorded_ms) == (
        4, 90, NOW + 10,
    )  # fmt: skip


def test_an_enrolment_without_counters_keeps_the_stored_ones(store: StateStore) -> None:
    _enroll(store, "tpm-1", tpm_counters=_counters(clock=7))
    _enroll(store, "tpm-1", now_ms=NOW + 1)  # e.g. the insecure evaluation gate
    kept = store.tpm_counters("tpm-1")
    assert kept is not None and kept.clock == 7


def test_a_refused_enrolment_stores_no_counters(store: StateStore) -> None:
    _enroll(store, "tpm-1", tpm_counters=_counters(clock=7))
    with pytest.raises(VerificationError) as info:
        _enroll(store, "tpm-2", tpm_counters=_counters(reset=9))  # same EK: a sybil
    assert info.value.reason is Reason.PLATFORM_ALREADY_ENROLLED
    assert store.tpm_counters("tpm-2") is None
    kept = store.tpm_counters("tpm-1")
    assert kept is not None and kept.reset_count == 3


def test_clearing_marks_the_row_until_the_next_enrolment(store: StateStore) -> None:
    assert store.clear_tpm_counters("tpm-1", now_ms=NOW) is False
    _enroll(store, "tpm-1", tpm_counters=_counters())
    assert store.clear_tpm_counters("tpm-1", now_ms=NOW + 5) is True
    cleared = store.tpm_counters("tpm-1")
    assert cleared is not None and cleared.cleared_ms == NOW + 5
    assert cleared.reset_count == 3  # kept, so the next enrolment can say what changed

    _enroll(store, "tpm-1", now_ms=NOW + 9, tpm_counters=_counters(reset=4, ek=EK_A))
    after = store.tpm_counters("tpm-1")
    assert after is not None and (after.cleared_ms, after.reset_count) == (None, 4)


def test_a_state_database_from_before_the_counters_table_still_opens(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    old = StateStore.open(str(path))
    old.create_federation(federation_id=FED, config={"rounds": 2}, now_ms=NOW)
    _enroll(old, "tpm-1")
    old.close()
    with sqlite3.connect(path) as db:  # what a state.db written before this table holds
        db.execute("DROP TABLE tpm_counters")
        assert "tpm_counters" not in {
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    reopened = StateStore.open(str(path))
    try:
        client = reopened.get_client("tpm-1")
        assert client is not None and client.tee == "tpm"
        assert reopened.tpm_counters("tpm-1") is None
        _enroll(reopened, "tpm-1", now_ms=NOW + 1, tpm_counters=_counters(clock=11))
        stored = reopened.tpm_counters("tpm-1")
        assert stored is not None and stored.clock == 11
    finally:
        reopened.close()
