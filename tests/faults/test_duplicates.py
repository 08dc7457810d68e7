"""Duplicate submissions are idempotent: the same signed receipt again (even twice at once)
is answered as accepted and counted once while its round is open; after the round closed it
is receipt_replayed, without quarantining the client, and the ledger still verifies (it
records a receipt once; a replay is a plain rejection entry)."""

from __future__ import annotations

import asyncio

import pytest

from fedtee.errors import Reason

from .conftest import FED, Clients, Federation


@pytest.mark.slow
def test_same_receipt_twice_is_counted_once(federation: Federation, clients: Clients) -> None:
    federation.configure(rounds=2, clients_per_round=2, min_clients=2)
    federation.start()
    a, b = clients.new("a"), clients.new("b")
    for v in (a, b):
        clients.run(v.enroll())
    task = clients.wait_task(a)
    signed, update = a.train(task, clients.run(a.download(task)))

    async def twice_at_once() -> list[bool]:
        outs = await asyncio.gather(a.submit(signed, update), a.submit(signed, update))
        return [o.accepted for o in outs]

    assert clients.run(twice_at_once()) == [True, True]
    third = clients.run(a.submit(signed, update))
    assert third.accepted and "counted once" in third.message
    assert federation.updates(1) == ["a"]

    task_b = clients.wait_task(b)
    assert clients.run(b.submit(*b.train(task_b, clients.run(b.download(task_b))))).accepted
    clients.wait_task(a)  # round 2 is open: round 1 aggregated a and b once each
    late = clients.run(a.submit(signed, update))
    assert not late.accepted and late.reason == Reason.RECEIPT_REPLAYED.value
    task2 = clients.wait_task(a)  # still a member: resending its own receipt is no attack
    assert task2.round == 2

    report = federation.ledger()
    assert [sorted(c.client_id for c in r.contributions) for r in report.lineage] == [["a", "b"]]
    receipts = federation.ledger_entries("receipt")
    assert sorted(r["client_id"] for r in receipts) == ["a", "b"]
    rejections = federation.ledger_entries("rejection")
    assert [(r["client_id"], r["round"], r["reason"]) for r in rejections] == [
        ("a", 1, Reason.RECEIPT_REPLAYED.value)
    ]
    federation.stop()
    done = federation.ledger_cli()
    assert done.returncode == 0, done.stdout + done.stderr
    assert FED in done.stdout
