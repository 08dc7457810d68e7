"""The next round opens as the last one closes, with its model loaded as the close wrote it.

Real server over TLS gRPC. The round driver ticks only every few seconds here, so a round
that opened within the submit that closed the previous one was not opened by a tick.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fedtee.client.transport import TaskKind
from fedtee.server.artifacts import ArtifactStore

from .conftest import Harness

SLOW_TICK_S = 3.0


def _wait_open(harness: Harness, number: int, timeout_s: float = 15) -> None:
    assert harness.server is not None and harness.server.rounds is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rnd = harness.server.rounds.open_round
        if rnd is not None and rnd.number == number:
            return
        time.sleep(0.02)
    raise AssertionError(f"round {number} never opened")


def test_the_next_round_opens_within_the_close_not_on_a_later_tick(harness: Harness) -> None:
    server = harness.start(rounds=3, clients_per_round=2, min_clients=2, tick_s=SLOW_TICK_S)
    assert server.rounds is not None
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    _wait_open(harness, 1, timeout_s=3 * SLOW_TICK_S)  # the first round: opened by a tick
    for number in (1, 2):
        assert a.train().accepted
        started = time.monotonic()
        assert b.train().accepted  # the last update: its submit closes the round
        rnd = server.rounds.open_round
        assert rnd is not None and rnd.number == number + 1
        assert time.monotonic() - started < SLOW_TICK_S
    assert a.train().accepted and b.train().accepted
    assert a.wait_task(TaskKind.FINISHED).kind is TaskKind.FINISHED
    assert server.rounds.open_round is None  # the last close opens nothing


def test_a_model_the_close_wrote_is_loaded_unhashed_and_the_initial_model_hashed(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[tuple[bytes, bool]] = []
    real = ArtifactStore.map_arrays

    def recorded(self: ArtifactStore, digest: bytes, *, verify: bool = True, **kw: Any) -> Any:
        loads.append((digest, verify))
        return real(self, digest, verify=verify, **kw)

    monkeypatch.setattr(ArtifactStore, "map_arrays", recorded)
    server = harness.start(rounds=2, clients_per_round=2, min_clients=2)
    assert server.store is not None and server.rounds is not None
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train().accepted and b.train().accepted
    _wait_open(harness, 2)
    first = server.store.get_round(server.rounds.federation_id, 1)
    assert first is not None and first.output_model_digest is not None
    assert loads[0] == (first.global_model_digest, True)  # the initial model: re-hashed
    assert (first.output_model_digest, False) in loads  # round 1's output: hashed as written
    assert (first.output_model_digest, True) not in loads


def test_a_failure_to_open_after_the_close_leaves_the_update_accepted_and_the_tick_opens(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedtee.server.rounds import RoundManager

    real = RoundManager._maybe_open
    calls: list[str] = []

    def flaky(self: RoundManager, *, now_ms: int) -> None:
        # The call from within the close (a submit's thread, not the round driver's).
        from_close = threading.current_thread().name.startswith("fedtee-rpc")
        calls.append("close" if from_close else "tick")
        if from_close and calls.count("close") == 1:
            raise RuntimeError("the store is away for a moment")
        real(self, now_ms=now_ms)

    monkeypatch.setattr(RoundManager, "_maybe_open", flaky)
    server = harness.start(rounds=2, clients_per_round=2, min_clients=2)
    assert server.rounds is not None
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    assert a.train().accepted
    assert b.train().accepted  # closed round 1; opening round 2 then failed
    assert "close" in calls
    _wait_open(harness, 2)  # the round driver's tick opened it
    assert a.train().accepted and b.train().accepted
    assert a.wait_task(TaskKind.FINISHED).kind is TaskKind.FINISHED
