"""Transfer slots over real TLS gRPC: with every slot taken a transfer waits on the server
for one (an upload sending nothing but its header meanwhile) or, past its wait, is refused
with server_busy and a retry_after hint, is not recorded as a refusal, and goes through once
a slot frees (fedtee.server.slots)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from fedtee import tensors
from fedtee.client.transport import ServerBusy, ServerUnavailable
from fedtee.errors import Reason
from fedtee.server.slots import SLOT_FREE_BYTES
from fedtee.wire.messages import SubmitOutcome

from .conftest import Harness


def _wait_until(ready: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if ready():
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"not within 10 s: {what}")


# 128 KiB of float32: each transfer of it takes a slot.
_MODEL = tensors.encode({"w": np.zeros((32, 1024), dtype=np.float32)})
assert len(_MODEL) > SLOT_FREE_BYTES


class _OneSlot:
    """A server with one transfer slot, clients a and b enrolled with their tasks, and a's
    update ready; :meth:`hold` has a's upload take the slot (its header and first bytes,
    then nothing until :meth:`release`)."""

    def __init__(
        self,
        harness: Harness,
        *,
        transfer_wait_s: float,
        transfer_idle_s: float = 120.0,
        model: bytes = _MODEL,
    ) -> None:
        self.server = harness.start(
            rounds=1,
            clients_per_round=2,
            min_clients=2,
            max_transfers=1,
            transfer_wait_s=transfer_wait_s,
            transfer_idle_s=transfer_idle_s,
            initial_model=model,  # past SLOT_FREE_BYTES: its transfers take slots
        )
        self.a, self.b = harness.peer("a"), harness.peer("b")
        assert self.a.enroll().accepted and self.b.enroll().accepted
        self.task_a, self.task_b = self.a.wait_task(), self.b.wait_task()
        self.signed, self.data = self.a.make_update(self.task_a)
        self.outcome: list[SubmitOutcome] = []
        self.error: list[Exception] = []
        self._go_on = threading.Event()
        self._uploader: threading.Thread | None = None

    def hold(self) -> None:
        sent_some = threading.Event()

        def slow() -> Iterator[bytes]:
            yield self.data[:64]
            sent_some.set()
            self._go_on.wait(30)
            yield self.data[64:]

        def upload() -> None:
            try:
                self.outcome.append(self.a.submit(self.signed, self.data, slow()))
            except Exception as exc:  # e.g. cut off: reported to the test
                self.error.append(exc)

        self._uploader = threading.Thread(target=upload)
        self._uploader.start()
        assert sent_some.wait(10)
        _wait_until(lambda: self.server.slots.in_use == 1, "a's upload holds the slot")

    def release(self) -> None:
        self._go_on.set()
        if self._uploader is not None:
            self._uploader.join(30)


def test_a_transfer_past_the_slots_is_told_to_wait_and_goes_through_later(
    harness: Harness,
) -> None:
    one = _OneSlot(harness, transfer_wait_s=0.0)
    server, b = one.server, one.b
    b_signed, b_data = b.make_update(one.task_b, delta=2.0)  # downloaded before the hold
    one.hold()
    try:
        assert server.store is not None and server.rounds is not None
        with pytest.raises(ServerBusy) as info:
            b.download(one.task_b)
        assert info.value.reason is Reason.SERVER_BUSY
        assert info.value.retry_after_s is not None and 0.05 <= info.value.retry_after_s <= 10
        # An upload is refused the same way, after its header and before any of its data.
        pulled: list[bytes] = []

        def b_chunks() -> Iterator[bytes]:
            for i in range(0, len(b_data), 64):
                pulled.append(b_data[i : i + 64])
                yield pulled[-1]

        with pytest.raises(ServerBusy) as up:
            b.submit(b_signed, b_data, b_chunks())
        assert up.value.reason is Reason.SERVER_BUSY and up.value.retry_after_s is not None
        assert pulled == []  # no go from the server: no data sent
        # Load shedding, not a refusal: nothing in the store or the ledger.
        assert server.store.rejections(server.rounds.federation_id) == []
        assert b"server_busy" not in (harness.tmp / "state" / "ledger.jsonl").read_bytes()
    finally:
        one.release()
    assert one.outcome and one.outcome[0].accepted
    assert server.slots.in_use == 0
    assert b.submit(b_signed, b_data).accepted  # the slot is free again


def test_a_transfer_past_the_slots_waits_on_the_server_and_sends_no_data_until_taken(
    harness: Harness,
) -> None:
    one = _OneSlot(harness, transfer_wait_s=30.0)
    server, b = one.server, one.b
    model = b.download(one.task_b)  # the slot is free: at once
    b_signed, b_data = b.make_update(one.task_b, delta=2.0)
    b_pulled = threading.Event()  # b's transport asked for its first data chunk

    def b_chunks() -> Iterator[bytes]:
        b_pulled.set()
        yield from (b_data[i : i + 64] for i in range(0, len(b_data), 64))

    b_outcome: list[SubmitOutcome] = []
    waiter = threading.Thread(
        target=lambda: b_outcome.append(b.submit(b_signed, b_data, b_chunks()))
    )
    one.hold()
    try:
        waiter.start()
        _wait_until(lambda: server.slots.queued == 1, "b's upload waits for the slot")
        threading.Event().wait(0.5)
        # Its header only: no data until the server takes it.
        assert not b_pulled.is_set()
        assert b_outcome == []
    finally:
        one.release()
        waiter.join(30)
    assert one.outcome and one.outcome[0].accepted
    assert b_pulled.is_set()
    assert b_outcome and b_outcome[0].accepted, b_outcome
    assert model and server.slots.in_use == 0 and server.slots.queued == 0
    assert server.store is not None and server.rounds is not None
    assert server.store.rejections(server.rounds.federation_id) == []


def test_a_small_transfer_takes_no_slot(harness: Harness) -> None:
    # The harness's model is a few dozen bytes: past every slot, downloads and uploads of it
    # go through at once (the worker threads bound how many run).
    server = harness.start(
        rounds=1, clients_per_round=2, min_clients=2, max_transfers=1, transfer_wait_s=0.0
    )
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    task_a, task_b = a.wait_task(), b.wait_task()
    held = server.slots.acquire("someone else")  # the only slot, taken
    try:
        signed, data = a.make_update(task_a)  # downloads the model
        assert a.submit(signed, data).accepted
        b_signed, b_data = b.make_update(task_b, delta=2.0)
        assert b.submit(b_signed, b_data).accepted
        assert server.slots.in_use == 1
    finally:
        held.release()


def test_an_upload_that_stops_sending_loses_its_slot_to_the_next_transfer(
    harness: Harness,
) -> None:
    # b waits 5 s at most: well before the round's deadline (20 s) would cut a off.
    one = _OneSlot(harness, transfer_wait_s=5.0, transfer_idle_s=1.0)
    server, b = one.server, one.b
    one.hold()  # a's upload: its header and 64 bytes, then nothing
    try:
        # b's download waits for the only slot; a's stalled upload is cut off after 1 s.
        model = b.download(one.task_b)
        assert tensors.digest(model) == one.task_b.global_model_digest
        assert one.outcome == [] and one.error, "a's upload was cut off"
    finally:
        one.release()
    assert server.slots.in_use == 0


def test_a_download_that_stops_reading_loses_its_slot_to_the_next_transfer(
    harness: Harness,
) -> None:
    # 16 MiB: more than gRPC buffers between the two ends, so a reader that stops stalls it.
    big = tensors.encode({"w": np.zeros((4096, 1024), dtype=np.float32)})
    one = _OneSlot(harness, transfer_wait_s=5.0, transfer_idle_s=1.0, model=big)
    server, a, b = one.server, one.a, one.b
    assert a.session is not None
    stalled = iter(
        a.transport.download_model(
            session=a.session,
            round=one.task_a.round,
            digest=one.task_a.global_model_digest,
            offset=0,
        )
    )
    next(stalled)  # one chunk, then a reads no more
    _wait_until(lambda: server.slots.in_use == 1, "a's download holds the slot")
    model = b.download(one.task_b)  # waits, then gets the slot a's download was cut off from
    assert tensors.digest(model) == one.task_b.global_model_digest
    assert server.slots.in_use == 0
    with pytest.raises(ServerUnavailable):  # what a reads next ends in the cut (CANCELLED)
        for _ in stalled:
            pass


def test_the_round_driver_gives_freed_memory_back_after_a_transfer_ends(
    harness: Harness,
) -> None:
    server = harness.start(rounds=1, trim_interval_s=0.01)
    time.sleep(0.3)  # six driver ticks
    assert server.trimmer.count == 0  # no transfer has ended: nothing to give back
    server.slots.acquire("a").release()  # a transfer ends
    _wait_until(lambda: server.trimmer.count == 1, "the driver's trim")
    time.sleep(0.3)
    assert server.trimmer.count == 1  # once per batch of ended transfers, not every tick
    server.slots.acquire("b").release()
    _wait_until(lambda: server.trimmer.count == 2, "a second trim")


def test_a_trim_interval_of_zero_never_trims(harness: Harness) -> None:
    server = harness.start(rounds=1, trim_interval_s=0.0)
    server.slots.acquire("a").release()
    time.sleep(0.3)
    assert server.trimmer.count == 0


@pytest.mark.parametrize("send", [16 * 1024, 48 * 1024, 1 << 20])
def test_the_server_sends_the_model_in_chunks_of_send_chunk_bytes(
    harness: Harness, send: int
) -> None:
    harness.start(rounds=1, clients_per_round=1, initial_model=_MODEL, send_chunk_bytes=send)
    a = harness.peer("a")
    assert a.enroll().accepted and a.session is not None
    task = a.wait_task()
    chunks = list(
        a.transport.download_model(
            session=a.session, round=task.round, digest=task.global_model_digest, offset=0
        )
    )
    sizes = [len(c.data) for c in chunks]
    assert b"".join(c.data for c in chunks) == _MODEL
    assert all(size == send for size in sizes[:-1])
    assert 0 < sizes[-1] <= send
    assert len(sizes) == -(-len(_MODEL) // send)
