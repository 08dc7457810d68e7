"""RoundSettings.wait_ms: how long a waiting client is told to sleep before asking again."""

from __future__ import annotations

import pytest

from fedtee.server.rounds import RoundSettings


def test_wait_scales_with_waiting_clients_within_bounds() -> None:
    s = RoundSettings(retry_after_ms=500, min_retry_after_ms=20, polls_per_s=200)
    assert s.wait_ms(1) == 20  # a small federation hears of its next round quickly
    assert s.wait_ms(0) == 20
    assert s.wait_ms(10) == 50
    assert s.wait_ms(30) == 150
    assert s.wait_ms(100) == 500
    assert s.wait_ms(10_000) == 500  # never longer than the configured cap
    # all waiting clients together: about polls_per_s calls per second below the cap
    for n in (4, 10, 40, 100):
        assert n * 1000 / s.wait_ms(n) == pytest.approx(200, rel=0.01)


def test_wait_bounds_are_validated() -> None:
    with pytest.raises(ValueError):
        RoundSettings(retry_after_ms=50, min_retry_after_ms=100)
    with pytest.raises(ValueError):
        RoundSettings(min_retry_after_ms=0)
    with pytest.raises(ValueError):
        RoundSettings(polls_per_s=0)
    fixed = RoundSettings(retry_after_ms=100, min_retry_after_ms=100)
    assert {fixed.wait_ms(n) for n in (1, 5, 1000)} == {100}


def test_concurrent_update_checks_are_bounded_and_validated() -> None:
    assert RoundSettings().max_concurrent_checks == 2
    assert RoundSettings(max_concurrent_checks=1).max_concurrent_checks == 1
    with pytest.raises(ValueError):
        RoundSettings(max_concurrent_checks=0)
