"""The server killed with SIGKILL mid-round and restarted on the same state directory: no
accepted update is lost or counted twice, the round resumes, the ledger stays verifiable.

The last two tests kill it exactly between two writes (the fault hook of
tests/faults/_faulty_server.py): after an update's store row, before its ledger receipt; and
after a round's ledger aggregation, before the store marks the round completed.
"""

from __future__ import annotations

import dataclasses

import pytest

from fedtee.errors import FedteeError, Reason
from fedtee.eval.loadgen import VirtualClient
from fedtee.server.rounds import FAULT_AGGREGATION_LOGGED, FAULT_UPDATE_RECORDED
from fedtee.server.store import RoundStatus
from fedtee.wire.messages import TaskKind

from .conftest import Clients, Federation


def _train(clients: Clients, client: VirtualClient) -> tuple[object, bytes, bool]:
    """One round's work: task, model, update, submission. Returns (signed, update, accepted)."""
    task = clients.wait_task(client)
    signed, update = client.train(task, clients.run(client.download(task)))
    return signed, update, clients.run(client.submit(signed, update)).accepted


def _contributors(federation: Federation) -> list[list[str]]:
    return [sorted(c.client_id for c in r.contributions) for r in federation.ledger().lineage]


@pytest.mark.slow
def test_sigkill_mid_round_loses_no_accepted_update(
    federation: Federation, clients: Clients
) -> None:
    federation.configure(rounds=2, clients_per_round=3, min_clients=3)
    federation.start()
    a, b, c = (clients.new(n) for n in ("a", "b", "c"))
    for v in (a, b, c):
        clients.run(v.enroll())
    signed_a, update_a, ok_a = _train(clients, a)
    assert ok_a and _train(clients, b)[2]

    federation.kill()
    assert federation.updates(1) == ["a", "b"]  # durable before each was acknowledged
    federation.start()

    # a never learnt whether its update arrived (say) and sends it again: counted once.
    again = clients.run(a.submit(signed_a, update_a))  # type: ignore[arg-type]
    assert again.accepted and "counted once" in again.message
    assert _train(clients, c)[2]  # the resumed round 1 takes the third update
    for v in (a, b, c):
        assert _train(clients, v)[2]  # round 2
    assert clients.wait_task(a, TaskKind.FINISHED).kind is TaskKind.FINISHED

    assert [r.status for r in federation.rounds()] == [RoundStatus.COMPLETED] * 2
    assert _contributors(federation) == [["a", "b", "c"], ["a", "b", "c"]]
    assert len(federation.ledger_entries("receipt")) == 6
    done = federation.ledger_cli()
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_kill_between_store_commit_and_ledger_append(
    federation: Federation, clients: Clients
) -> None:
    federation.configure(rounds=1, clients_per_round=3, min_clients=3)
    federation.start_faulty(FAULT_UPDATE_RECORDED)
    a = clients.new("a", max_attempts=1)
    b, c = clients.new("b"), clients.new("c")
    for v in (a, b, c):
        clients.run(v.enroll())
    task = clients.wait_task(a)
    signed, update = a.train(task, clients.run(a.download(task)))

    with pytest.raises(FedteeError):  # the server died inside the call
        clients.run(a.submit(signed, update))
    assert federation.wait_exit() == -9
    # The gap: the store accepted a's update, the ledger never heard of it.
    assert federation.updates(1) == ["a"]
    assert federation.ledger_entries("receipt") == []

    federation.start()
    # Recovery on startup: the ledger catches up with the store before anything else.
    assert [r["client_id"] for r in federation.ledger_entries("receipt")] == ["a"]
    _patient(a)
    again = clients.run(a.submit(signed, update))
    assert again.accepted and "counted once" in again.message
    assert _train(clients, b)[2] and _train(clients, c)[2]
    assert clients.wait_task(a, TaskKind.FINISHED).kind is TaskKind.FINISHED

    assert _contributors(federation) == [["a", "b", "c"]]
    assert sorted(r["client_id"] for r in federation.ledger_entries("receipt")) == ["a", "b", "c"]
    done = federation.ledger_cli()
    assert done.returncode == 0, done.stdout + done.stderr


def _patient(client: VirtualClient) -> None:
    """After the crash, let a one-attempt client ask again: the server answers a resent
    receipt from its header alone, and grpc.aio can then end the upload as INTERNAL in place
    of that answer (fedtee.eval.loadgen.EndedMidUpload), which a second attempt gets."""
    client._options = dataclasses.replace(client._options, max_attempts=30)


@pytest.mark.slow
def test_kill_between_aggregation_log_and_round_completion(
    federation: Federation, clients: Clients
) -> None:
    federation.configure(rounds=2, clients_per_round=2, min_clients=2)
    federation.start_faulty(FAULT_AGGREGATION_LOGGED)
    a = clients.new("a")
    b = clients.new("b", max_attempts=1)
    for v in (a, b):
        clients.run(v.enroll())
    assert _train(clients, a)[2]
    task = clients.wait_task(b)
    signed, update = b.train(task, clients.run(b.download(task)))
    with pytest.raises(FedteeError):  # b's update completes the round; the server dies closing it
        clients.run(b.submit(signed, update))
    assert federation.wait_exit() == -9
    assert [r.status for r in federation.rounds()] == [RoundStatus.OPEN]
    assert len(federation.ledger_entries("aggregation")) == 1

    federation.start()
    # Round 1 is finished from the ledger's aggregation, not aggregated a second time.
    assert federation.rounds()[0].status is RoundStatus.COMPLETED
    _patient(b)
    late = clients.run(b.submit(signed, update))  # b resends: its round has closed
    assert not late.accepted and late.reason == Reason.RECEIPT_REPLAYED.value
    for v in (a, b):  # b is not quarantined for resending its own receipt
        assert _train(clients, v)[2]
    assert clients.wait_task(a, TaskKind.FINISHED).kind is TaskKind.FINISHED

    assert len(federation.ledger_entries("aggregation")) == 2
    assert _contributors(federation) == [["a", "b"], ["a", "b"]]
    done = federation.ledger_cli()
    assert done.returncode == 0, done.stdout + done.stderr
