"""The load generator against a real server process: every virtual client enrols over TLS
gRPC with its own key and sim platform, trains every round and is accepted."""

from __future__ import annotations

import pytest

from fedtee.server.store import RoundStatus

from .conftest import Federation


@pytest.mark.slow
def test_fifty_virtual_clients_enrol_and_complete_every_round(federation: Federation) -> None:
    federation.configure(rounds=2, clients_per_round=50, min_clients=50)
    federation.start()

    report = federation.load(50, channels=10)

    assert report.errors == 0, report.error_reasons
    assert report.enrolled == 50 and report.finished == 50
    assert report.accepted_updates == 100 and report.rejected_updates == 0
    rounds = federation.rounds()
    assert [r.status for r in rounds] == [RoundStatus.COMPLETED, RoundStatus.COMPLETED]
    assert all(len(r.selected) == 50 for r in rounds)
    ledger = federation.ledger()
    assert len(ledger.enrolled_clients) == 50
    assert [len(r.contributions) for r in ledger.lineage] == [50, 50]
