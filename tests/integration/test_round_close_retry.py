"""A round close that fails is retried with backoff, not on every tick of the round driver.

A stored update whose bytes changed on disk after it was accepted makes the close fail with
STORAGE_CORRUPT (it must never reach the model). Each attempt re-hashes and folds every
update of the round, so retrying it 20 times a second would keep the server busy for
nothing; once the file is whole again the round closes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fedtee.client.transport import TaskKind
from fedtee.server import rounds

from .conftest import Harness


def test_a_failed_close_backs_off_and_closes_once_the_update_is_whole(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[float] = []
    real = rounds.aggregate_stored

    def counted(*args: object, **kwargs: object) -> object:
        attempts.append(time.monotonic())
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(rounds, "aggregate_stored", counted)
    server = harness.start(rounds=1, clients_per_round=2, min_clients=2)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train().accepted

    assert server.store is not None and server.rounds is not None
    (stored,) = server.store.updates(server.rounds.federation_id, 1)
    path = Path(stored.artifact_path)
    if not path.is_absolute():
        path = harness.tmp / "state" / path
    original = path.read_bytes()
    path.chmod(0o644)
    path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # changed on disk

    # The last update (different bytes: identical ones would share, and rewrite, a's file):
    # the close is tried, and fails.
    assert b.train(delta=2.0).accepted
    assert len(attempts) == 1
    time.sleep(0.6)  # about 12 driver ticks, inside the first 1 s backoff
    assert len(attempts) == 1
    assert a.task().kind is TaskKind.WAIT  # the round is still open, not closed without it

    path.write_bytes(original)  # whole again: the next attempt closes the round
    assert a.wait_task(TaskKind.FINISHED, timeout_s=15).kind is TaskKind.FINISHED
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.9
