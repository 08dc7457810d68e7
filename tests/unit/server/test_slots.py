"""Transfer slots: a bounded number of model transfers at once, the rest told when to ask
again (fedtee.server.slots)."""

from __future__ import annotations

import threading

import pytest

from fedtee.errors import Reason
from fedtee.server import slots as slots_module
from fedtee.server.slots import Lease, ServerBusyError, TransferSlots


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_capacity_bounds_transfers_and_a_release_frees_a_slot() -> None:
    slots = TransferSlots(2, clock=_Clock())
    a, b = slots.acquire("a"), slots.acquire("b")
    assert slots.in_use == 2
    with pytest.raises(ServerBusyError) as info:
        slots.acquire("c")
    assert info.value.reason is Reason.SERVER_BUSY
    assert slots_module.MIN_RETRY_MS <= info.value.retry_after_ms <= slots_module.MAX_RETRY_MS
    a.release()
    a.release()  # idempotent: a finally and a termination callback may both run it
    assert slots.in_use == 1
    c = slots.acquire("c")
    assert slots.in_use == 2
    b.release()
    c.release()
    assert slots.in_use == 0


def test_one_client_holds_at_most_one_slot() -> None:
    slots = TransferSlots(4, clock=_Clock())
    held = slots.acquire("a")
    with pytest.raises(ServerBusyError):
        slots.acquire("a")  # e.g. its dropped stream has not ended here yet
    assert slots.in_use == 1
    held.release()
    slots.acquire("a").release()


def test_zero_capacity_is_unlimited() -> None:
    slots = TransferSlots(0)
    leases = [slots.acquire("same") for _ in range(100)]
    assert slots.in_use == 100
    for lease in leases:
        lease.release()
    assert slots.in_use == 0
    with pytest.raises(ValueError):
        TransferSlots(-1)


def test_the_hint_follows_transfer_time_and_waiters_per_slot() -> None:
    clock = _Clock()
    slots = TransferSlots(1, clock=clock)
    for _ in range(40):  # transfers of 2 s each: the mean converges on 2 s
        lease = slots.acquire("x")
        clock.now += 2.0
        lease.release()
    held = slots.acquire("holder")

    def hint(who: str) -> int:
        with pytest.raises(ServerBusyError) as info:
            slots.acquire(who)
        return info.value.retry_after_ms

    first = hint("w0")
    assert 1_900 <= first <= 2_000  # one waiter per slot: about one transfer time
    for k in range(1, 4):
        last = hint(f"w{k}")
    assert 7_600 <= last <= 8_000  # four waiters on one slot: about four transfer times
    assert hint("w3") == last  # asking again does not count a client twice
    clock.now += 1_000.0  # long gone: no longer counted as waiting
    assert hint("w9") <= 2_000
    held.release()


def test_the_hint_is_bounded() -> None:
    clock = _Clock()
    slots = TransferSlots(1, clock=clock)
    lease = slots.acquire("slow")
    clock.now += 3_600.0
    lease.release()  # one transfer of an hour
    slots.acquire("holder")
    with pytest.raises(ServerBusyError) as info:
        slots.acquire("w")
    assert info.value.retry_after_ms == slots_module.MAX_RETRY_MS


def test_concurrent_acquires_never_exceed_capacity() -> None:
    slots = TransferSlots(3)
    peak = 0
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(k: int) -> None:
        nonlocal peak
        for _ in range(200):
            try:
                lease = slots.acquire(f"c{k}")
            except ServerBusyError:
                continue
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
                return
            with lock:
                peak = max(peak, slots.in_use)
            lease.release()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert 1 <= peak <= 3
    assert slots.in_use == 0


def _acquire_in_thread(
    slots: TransferSlots, who: str, wait_s: float, out: dict[str, object]
) -> threading.Thread:
    def run() -> None:
        try:
            out[who] = slots.acquire(who, wait_s=wait_s)
        except ServerBusyError as exc:
            out[who] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_queued(slots: TransferSlots, n: int) -> None:
    for _ in range(500):
        if slots.queued == n:
            return
        threading.Event().wait(0.01)
    raise AssertionError(f"{slots.queued} queued, expected {n}")


def test_a_waiting_transfer_gets_the_slot_a_release_frees_first_come_first_served() -> None:
    slots = TransferSlots(1, max_waiting=4)
    held = slots.acquire("a")
    got: dict[str, object] = {}
    first = _acquire_in_thread(slots, "b", 30.0, got)
    _wait_queued(slots, 1)
    second = _acquire_in_thread(slots, "c", 30.0, got)
    _wait_queued(slots, 2)
    with pytest.raises(ServerBusyError):
        slots.acquire("d")  # no wait asked: refused at once, even with room in the queue
    held.release()  # handed to b, the first to wait, not to whoever asks next
    first.join(5)
    assert isinstance(got.get("b"), slots_module.Lease)
    assert "c" not in got and slots.in_use == 1 and slots.queued == 1
    with pytest.raises(ServerBusyError):
        slots.acquire("e")  # a newcomer does not pass the queue
    got_b = got["b"]
    assert isinstance(got_b, slots_module.Lease)
    got_b.release()
    second.join(5)
    got_c = got["c"]
    assert isinstance(got_c, slots_module.Lease)
    got_c.release()
    assert slots.in_use == 0 and slots.queued == 0
    slots.acquire("f").release()  # free again: taken at once


def test_a_wait_that_runs_out_is_refused_with_a_hint_and_leaves_the_queue() -> None:
    slots = TransferSlots(1, max_waiting=4)
    held = slots.acquire("a")
    with pytest.raises(ServerBusyError) as info:
        slots.acquire("b", wait_s=0.05)
    assert info.value.retry_after_ms >= slots_module.MIN_RETRY_MS
    assert slots.queued == 0
    held.release()
    assert slots.in_use == 0  # nobody waits: the slot is free, not handed to a leaver


def test_the_queue_is_bounded_and_a_client_queues_once() -> None:
    slots = TransferSlots(1, max_waiting=1)
    held = slots.acquire("a")
    got: dict[str, object] = {}
    waiter = _acquire_in_thread(slots, "b", 30.0, got)
    _wait_queued(slots, 1)
    with pytest.raises(ServerBusyError):
        slots.acquire("c", wait_s=30.0)  # the queue is full: refused at once
    with pytest.raises(ServerBusyError):
        slots.acquire("a", wait_s=30.0)  # holds a slot: never waits behind itself
    held.release()
    waiter.join(5)
    lease = got["b"]
    assert isinstance(lease, slots_module.Lease)
    lease.release()
    with pytest.raises(ValueError):
        TransferSlots(1, max_waiting=-1)


def test_waiting_transfers_never_exceed_capacity_and_all_get_through() -> None:
    slots = TransferSlots(2, max_waiting=16)
    peak = 0
    lock = threading.Lock()
    done: list[str] = []

    def worker(k: int) -> None:
        nonlocal peak
        for _ in range(20):
            lease = slots.acquire(f"c{k}", wait_s=30.0)  # 8 clients, 2 slots: all wait
            with lock:
                peak = max(peak, slots.in_use)
            threading.Event().wait(0.001)  # a transfer takes a while
            lease.release()
        with lock:
            done.append(f"c{k}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(done) == 8
    assert 1 <= peak <= 2
    assert slots.in_use == 0 and slots.queued == 0


def test_a_transfer_that_moves_nothing_is_cut_off_once_and_its_slot_freed_on_release() -> None:
    clock = _Clock()
    slots = TransferSlots(2, clock=clock)
    cut: list[str] = []
    busy, stalled = slots.acquire("busy"), slots.acquire("stalled")
    busy.watch(lambda: cut.append("busy"))
    stalled.watch(lambda: cut.append("stalled"))
    free = Lease.free()
    free.watch(lambda: cut.append("free"))  # holds no slot: never watched
    expired = []
    for _ in range(5):
        clock.now += 10.0
        busy.touch()  # moves a chunk every 10 s
        expired.append(slots.expire_idle(30.0))
    # Idle 10, 20, 30 s: kept; past 30 s: cut off, once, however often it is checked.
    assert expired == [[], [], [], ["stalled"], []]
    assert cut == ["stalled"]
    assert slots.expire_idle(30.0) == []
    assert slots.in_use == 2  # cutting off is not releasing: the transfer's finally does that
    stalled.release()
    assert slots.in_use == 1
    clock.now += 100.0
    assert slots.expire_idle(30.0) == ["busy"] and cut == ["stalled", "busy"]
    busy.release()
    assert slots.in_use == 0 and slots.expire_idle(0.0) == []


def test_ended_counts_each_transfer_once_when_it_releases_its_slot() -> None:
    slots = TransferSlots(2)
    assert slots.ended == 0
    a, b = slots.acquire("a"), slots.acquire("b")
    assert slots.ended == 0  # held, not ended
    a.release()
    a.release()  # idempotent: from a finally and a termination callback
    assert slots.ended == 1
    b.release()
    assert slots.ended == 2
    unlimited = TransferSlots(0)
    unlimited.acquire("c").release()
    assert unlimited.ended == 1
