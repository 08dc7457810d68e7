"""The federation server end to end: real gRPC over loopback TLS, a SQLite file, sim TEE."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import numpy as np
import pytest

from fedtee import identity, tensors
from fedtee.client.transport import TaskKind
from fedtee.errors import ConfigError, ProtocolError, Reason, StorageError
from fedtee.ledger.log import verify_ledger
from fedtee.ledger.receipts import Receipt, sign_receipt
from fedtee.server.app import FederationServer
from fedtee.server.store import RoundStatus, StateStore

from .conftest import FED, GOOD, Harness


def _rounds(h: Harness) -> dict[int, RoundStatus]:
    assert h.server is not None and h.server.store is not None
    return {r.number: r.status for r in h.server.store.rounds(FED)}


def _wait(cond: object, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_enrolment_accepted_and_two_rounds_aggregate(harness: Harness) -> None:
    server = harness.start(rounds=2, clients_per_round=2, min_clients=2)
    a, b = harness.peer("alice"), harness.peer("bob")
    for p in (a, b):
        out = p.enroll()
        assert out.accepted, out
        result = json.loads(out.attestation_result_json)
        assert result["tee"] == "sim" and result["status"] in ("affirming", "warning")
        assert result["hardware_backed"] is False  # sim: shown as not hardware-backed
        assert result["code_identity"] == GOOD.hex()

    for number, (delta_a, delta_b) in enumerate(((1.0, 3.0), (1.0, 3.0)), start=1):
        assert a.train(delta=delta_a).accepted
        assert b.train(delta=delta_b).accepted
        # This round's close, not "no round open": the next one may open within a poll.
        _wait(lambda n=number: _rounds(harness).get(n) is RoundStatus.COMPLETED)

    _wait(lambda: server.finished)
    assert a.task().kind is TaskKind.FINISHED
    assert _rounds(harness) == {1: RoundStatus.COMPLETED, 2: RoundStatus.COMPLETED}
    # FedAvg of +1 and +3 with equal weights, twice: every weight is 4.
    store = server.store
    assert store is not None
    final = store.get_round(FED, 2)
    assert final is not None and final.output_model_digest is not None
    arrays = tensors.decode(
        (server.paths.artifacts / f"{final.output_model_digest.hex()}.safetensors").read_bytes()
    )
    assert np.allclose(arrays["w"], 4.0) and np.allclose(arrays["b"], 4.0)
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert report.final_model_digest == final.output_model_digest.hex()
    assert len(report.enrolled_clients) == 2


def test_enrolment_rejections_each_with_their_reason(harness: Harness) -> None:
    harness.start(measurements=[GOOD])
    cases = {
        "wrong-nonce": dict(send_nonce=os.urandom(32)),
        "key-not-bound": dict(bind_key=identity.public_key_der(identity.generate())),
    }
    results = {name: harness.peer(name).enroll(**kw) for name, kw in cases.items()}  # type: ignore[arg-type]
    results["unlisted"] = harness.peer("unlisted", measurement=bytes.fromhex("b2" * 48)).enroll()
    results["debug"] = harness.peer("debug", debug=True).enroll()
    expected = {
        "wrong-nonce": Reason.NONCE_UNKNOWN,
        "key-not-bound": Reason.REPORT_DATA_MISMATCH,
        "unlisted": Reason.MEASUREMENT_NOT_ALLOWED,
        "debug": Reason.DEBUG_ENABLED,
    }
    for name, reason in expected.items():
        assert not results[name].accepted, name
        assert results[name].reason == reason.value, (name, results[name])
        assert results[name].credential == b""
    server = harness.server
    assert server is not None and server.store is not None
    recorded = {(r.client_id, r.reason) for r in server.store.rejections(FED)}
    assert {(n, r) for n, r in expected.items()} <= recorded
    assert server.store.list_clients(FED) == []


def test_nonce_is_single_use_and_one_platform_one_client(harness: Harness) -> None:
    harness.start()
    a = harness.peer("a")
    ch = a.transport.get_challenge(client_id="a", tee=a.attester.tee, aux={})
    from fedtee.attest.binding import report_data

    ev = a.attester.attest(report_data(nonce=ch.nonce, public_key=a.public_key))
    first = a.transport.enroll(client_id="a", nonce=ch.nonce, public_key=a.public_key, evidence=ev)
    again = a.transport.enroll(client_id="a", nonce=ch.nonce, public_key=a.public_key, evidence=ev)
    assert first.accepted and not again.accepted
    assert again.reason == Reason.NONCE_REUSED.value
    twin = harness.peer("a-twin")
    twin.attester = a.attester  # same platform (sim platform key), another client id
    twin.platform = a.platform
    out = twin.enroll()
    assert out.reason == Reason.PLATFORM_ALREADY_ENROLLED.value


def test_tampered_update_rejected_and_client_quarantined(harness: Harness) -> None:
    server = harness.start(rounds=2, clients_per_round=2, min_clients=1, round_timeout_ms=1500)
    honest, cheat = harness.peer("honest"), harness.peer("cheat")
    assert honest.enroll().accepted and cheat.enroll().accepted
    task = cheat.wait_task()
    signed, data = cheat.make_update(task)
    tampered = tensors.encode({k: v * 0 + 100 for k, v in tensors.decode(data).items()})
    out = cheat.submit(signed, tampered)
    assert not out.accepted and out.reason == Reason.UPDATE_DIGEST_MISMATCH.value
    assert honest.train().accepted
    # Round 2 starts at once with the honest client alone: the quarantined cheater is not
    # waited for (start_wait is 10 s here).
    assert honest.wait_task(timeout_s=4).round == 2
    assert honest.train().accepted
    _wait(lambda: server.finished)
    assert _rounds(harness) == {1: RoundStatus.COMPLETED, 2: RoundStatus.COMPLETED}
    store = server.store
    assert store is not None
    client = store.get_client("cheat")
    assert client is not None and client.quarantined
    assert [u.client_id for u in store.updates(FED, 1)] == ["honest"]
    with pytest.raises(ProtocolError) as exc:
        cheat.task()
    assert exc.value.reason is Reason.CLIENT_QUARANTINED
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert report.rejected_receipts == 1


def test_round_with_a_rejected_update_closes_without_waiting_for_its_deadline(
    harness: Harness,
) -> None:
    # A 60 s deadline: the round must close as soon as the honest update arrives, since the
    # only other selected client has already been rejected and will never deliver.
    server = harness.start(rounds=1, clients_per_round=2, min_clients=1, round_timeout_ms=60_000)
    honest, cheat = harness.peer("honest"), harness.peer("cheat")
    assert honest.enroll().accepted and cheat.enroll().accepted
    task = cheat.wait_task()
    signed, data = cheat.make_update(task)
    tampered = tensors.encode({k: v * 0 + 7 for k, v in tensors.decode(data).items()})
    assert not cheat.submit(signed, tampered).accepted
    assert honest.train().accepted
    _wait(lambda: server.finished, timeout_s=10)
    assert _rounds(harness) == {1: RoundStatus.COMPLETED}


def test_receipt_replayed_in_a_later_round_rejected(harness: Harness) -> None:
    server = harness.start(rounds=2, clients_per_round=1, min_clients=1)
    a = harness.peer("a")
    assert a.enroll().accepted
    assert a.train().accepted
    old_signed, old_data = a.last_signed, a.last_update
    assert old_signed is not None
    _wait(
        lambda: (
            server.rounds is not None
            and server.rounds.open_round is not None
            and server.rounds.open_round.number == 2
        )
    )
    a.wait_task()
    out = a.submit(old_signed, old_data)
    assert not out.accepted and out.reason == Reason.RECEIPT_REPLAYED.value


def test_a_client_dying_mid_round_does_not_stall_it(harness: Harness) -> None:
    server = harness.start(rounds=1, clients_per_round=3, min_clients=2, round_timeout_ms=1500)
    peers = [harness.peer(n) for n in ("p1", "p2", "dies")]
    for p in peers:
        assert p.enroll().accepted
    dying = peers[2]
    task = dying.wait_task()
    signed, data = dying.make_update(task)

    def half_then_die() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        raise ConnectionResetError("client process killed")

    with pytest.raises(ProtocolError):  # the call breaks off on the client's side
        dying.submit(signed, data, chunks=half_then_die())
    dying.close()
    assert peers[0].train().accepted and peers[1].train().accepted
    _wait(lambda: server.finished)
    store = server.store
    assert store is not None
    assert sorted(u.client_id for u in store.updates(FED, 1)) == ["p1", "p2"]
    assert _rounds(harness) == {1: RoundStatus.COMPLETED}


def test_server_restart_mid_round_resumes_without_losing_accepted_updates(
    harness: Harness,
) -> None:
    harness.start(rounds=2, clients_per_round=2, min_clients=2)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train(delta=2.0).accepted
    harness.stop()  # killed mid-round: a's update is in, b's is not

    server = harness.start()
    assert _rounds(harness) == {1: RoundStatus.OPEN}
    a, b = harness.peer("a", key=a.key), harness.peer("b", key=b.key)
    for old, new in ((a, a), (b, b)):
        del old
        assert new.enroll().accepted  # the same clients re-attest to the restarted server
    assert b.wait_task().round == 1
    assert a.task().kind is TaskKind.WAIT  # a's accepted update survived the restart
    assert b.train(delta=4.0).accepted
    _wait(lambda: _rounds(harness).get(1) is RoundStatus.COMPLETED)
    store = server.store
    assert store is not None
    assert sorted(u.client_id for u in store.updates(FED, 1)) == ["a", "b"]
    out = store.get_round(FED, 1)
    assert out is not None and out.output_model_digest is not None
    arrays = tensors.decode(
        (server.paths.artifacts / f"{out.output_model_digest.hex()}.safetensors").read_bytes()
    )
    assert np.allclose(arrays["w"], 3.0)
    verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)


def test_expired_credential_means_reattest(harness: Harness) -> None:
    harness.start(credential_ttl_ms=60_000)
    a = harness.peer("a")
    assert a.enroll().accepted
    assert a.task().kind in (TaskKind.WAIT, TaskKind.TRAIN)
    harness.clock.offset = timedelta(seconds=61)
    assert a.task().kind is TaskKind.REATTEST
    assert a.enroll().accepted
    assert a.task().kind is not TaskKind.REATTEST


def test_sqlite_state_is_a_real_file(harness: Harness) -> None:
    harness.start()
    assert harness.peer("a").enroll().accepted
    harness.stop()
    ledger = (harness.tmp / "state" / "ledger.jsonl").read_bytes()
    last = ledger.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert b'"kind":"checkpoint"' in last  # a clean stop signs what was appended
    verify_ledger(ledger, server_public_key=None)
    store = StateStore.open(str(harness.tmp / "state" / "state.db"))
    try:
        assert [c.id for c in store.list_clients(FED)] == ["a"]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda a: {k: np.full_like(v, np.nan) for k, v in a.items()}, Reason.UPDATE_NONFINITE),
        (lambda a: {"w": a["w"]}, Reason.UPDATE_SHAPE_MISMATCH),
        (lambda a: {**a, "w": np.zeros((2, 2), np.float32)}, Reason.UPDATE_SHAPE_MISMATCH),
    ],
)
def test_updates_that_do_not_fit_the_model_never_reach_aggregation(
    harness: Harness, make: object, reason: Reason
) -> None:
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    a = harness.peer("a")
    assert a.enroll().accepted
    task = a.wait_task()
    model = tensors.decode(a.download(task))
    data = tensors.encode(make(model))  # type: ignore[operator]
    receipt = Receipt(
        federation_id=FED,
        round=task.round,
        client_id="a",
        global_model_digest=task.global_model_digest,
        update_digest=tensors.digest(data),
        num_examples=3,
        measurement=a.measurement,
    )
    out = a.submit(sign_receipt(receipt, a.key), data)
    assert (out.accepted, out.reason) == (False, reason.value)
    assert server.store is not None and server.store.updates(FED, 1) == []


def test_restart_after_every_update_arrived_aggregates_at_once(harness: Harness) -> None:
    harness.start(rounds=1, clients_per_round=2, min_clients=2)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train().accepted
    # Simulate a crash right after b's update became durable but before the round closed.
    server = harness.server
    assert server is not None and server.rounds is not None
    rounds = server.rounds
    rounds._close = lambda *, now_ms: None  # type: ignore[method-assign]
    assert b.train().accepted
    harness.stop()
    server = harness.start()
    assert server.finished
    assert _rounds(harness) == {1: RoundStatus.COMPLETED}


def test_a_stalled_upload_is_cut_off_and_the_round_completes(harness: Harness) -> None:
    server = harness.start(
        rounds=1, clients_per_round=2, min_clients=1, round_timeout_ms=1000, upload_grace_ms=200
    )
    ok, stalls = harness.peer("ok"), harness.peer("stalls")
    assert ok.enroll().accepted and stalls.enroll().accepted
    task = stalls.wait_task()
    signed, data = stalls.make_update(task)
    release = threading.Event()

    def half_then_hang() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        release.wait(20)  # the client neither sends nor closes

    outcome: list[object] = []

    def upload() -> None:
        try:
            outcome.append(stalls.submit(signed, data, chunks=half_then_hang()))
        except ProtocolError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    assert ok.train().accepted
    _wait(lambda: server.finished, timeout_s=10)
    store = server.store
    assert store is not None
    _wait(lambda: any(r.reason is Reason.STREAM_STALLED for r in store.rejections(FED)))
    release.set()
    thread.join(10)
    assert [u.client_id for u in store.updates(FED, 1)] == ["ok"]
    assert _rounds(harness) == {1: RoundStatus.COMPLETED}


def test_enrolled_client_presenting_bad_evidence_is_quarantined(harness: Harness) -> None:
    harness.start()
    a = harness.peer("a")
    assert a.enroll().accepted
    debug_twin = harness.peer("a", debug=True)  # same client id, now a debug TEE
    out = debug_twin.enroll()
    assert out.reason == Reason.DEBUG_ENABLED.value
    again = harness.peer("a").enroll()  # good evidence no longer helps
    assert (again.accepted, again.reason) == (False, Reason.CLIENT_QUARANTINED.value)
    with pytest.raises(ProtocolError) as exc:
        a.task()  # and the credential it already had stops working
    assert exc.value.reason is Reason.CLIENT_QUARANTINED


def test_reenrolment_with_a_new_key_retires_the_old_credential(harness: Harness) -> None:
    harness.start()
    old = harness.peer("a")
    assert old.enroll().accepted
    new = harness.peer("a")  # same client id, new identity key, new evidence
    assert new.enroll().accepted
    assert new.task().kind in (TaskKind.WAIT, TaskKind.TRAIN)
    with pytest.raises(ProtocolError) as exc:
        old.task()
    assert exc.value.reason is Reason.CREDENTIAL_WRONG_CLIENT


def test_crash_between_ledger_and_store_does_not_aggregate_twice(harness: Harness) -> None:
    harness.start(rounds=1, clients_per_round=2, min_clients=2)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train().accepted
    server = harness.server
    assert server is not None and server.store is not None

    def crash(**_: object) -> None:
        raise StorageError("simulated crash before the store marked the round completed")

    server.store.complete_round = crash  # type: ignore[method-assign]
    assert b.train().accepted  # durable before the close failed, so still accepted
    time.sleep(0.3)  # the driver retries the close (and keeps failing) meanwhile
    harness.stop()

    server = harness.start()
    assert server.finished
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert [r.round for r in report.lineage] == [1]
    assert server.store is not None
    done = server.store.get_round(FED, 1)
    assert done is not None and done.status is RoundStatus.COMPLETED
    assert done.output_model_digest is not None
    assert done.output_model_digest.hex() == report.final_model_digest


def test_expired_nonces_are_refused_then_purged(harness: Harness) -> None:
    harness.start()
    a = harness.peer("a")
    ch = a.transport.get_challenge(client_id="a", tee=a.attester.tee, aux={})
    from fedtee.attest.binding import report_data

    ev = a.attester.attest(report_data(nonce=ch.nonce, public_key=a.public_key))
    harness.clock.offset = timedelta(seconds=61)  # past the 60 s nonce TTL
    out = a.transport.enroll(client_id="a", nonce=ch.nonce, public_key=a.public_key, evidence=ev)
    assert out.reason == Reason.NONCE_EXPIRED.value
    ch2 = a.transport.get_challenge(client_id="a", tee=a.attester.tee, aux={})
    harness.clock.offset = timedelta(seconds=200)  # expired > 60 s ago: the driver purges it
    time.sleep(0.3)
    ev2 = a.attester.attest(report_data(nonce=ch2.nonce, public_key=a.public_key))
    out = a.transport.enroll(client_id="a", nonce=ch2.nonce, public_key=a.public_key, evidence=ev2)
    assert out.reason == Reason.NONCE_UNKNOWN.value


def test_a_nonce_issued_to_one_client_cannot_enrol_another(harness: Harness) -> None:
    harness.start()
    a, b = harness.peer("a"), harness.peer("b")
    ch = a.transport.get_challenge(client_id="a", tee=a.attester.tee, aux={})
    from fedtee.attest.binding import report_data

    ev = b.attester.attest(report_data(nonce=ch.nonce, public_key=b.public_key))
    out = b.transport.enroll(client_id="b", nonce=ch.nonce, public_key=b.public_key, evidence=ev)
    assert (out.accepted, out.reason) == (False, Reason.NONCE_MISMATCH.value)


def test_a_second_server_on_the_same_state_dir_is_refused(harness: Harness) -> None:
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    with pytest.raises(ConfigError) as err:
        FederationServer(server.config).start()
    assert "in use by another running fedtee server" in err.value.message
