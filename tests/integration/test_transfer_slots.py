"""Transfer slots over real TLS gRPC: with every slot taken a transfer is refused at once with
server_busy and a retry_after hint, is not recorded as a refusal, and goes through once a
slot frees (fedtee.server.slots)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from fedtee.client.transport import ServerBusy
from fedtee.errors import Reason
from fedtee.wire.messages import SubmitOutcome

from .conftest import Harness


def test_a_transfer_past_the_slots_is_told_to_wait_and_goes_through_later(
    harness: Harness,
) -> None:
    server = harness.start(rounds=1, clients_per_round=2, min_clients=2, max_transfers=1)
    a, b = harness.peer("a"), harness.peer("b")
    assert a.enroll().accepted and b.enroll().accepted
    task_a, task_b = a.wait_task(), b.wait_task()
    signed, data = a.make_update(task_a)
    b_signed, b_data = b.make_update(task_b, delta=2.0)  # downloaded before the slot is taken

    # a's upload holds the only slot: its header and first bytes, then nothing until told.
    go_on = threading.Event()
    sent_some = threading.Event()

    def slow() -> Iterator[bytes]:
        yield data[:64]
        sent_some.set()
        go_on.wait(30)
        yield data[64:]

    outcome: list[SubmitOutcome] = []
    uploader = threading.Thread(target=lambda: outcome.append(a.submit(signed, data, slow())))
    uploader.start()
    try:
        assert sent_some.wait(10)
        assert server.store is not None and server.rounds is not None
        for _ in range(500):  # the server takes the slot as it reads the stream (10 s)
            if server.slots.in_use == 1:
                break
            threading.Event().wait(0.02)
        assert server.slots.in_use == 1
        with pytest.raises(ServerBusy) as info:
            b.download(task_b)
        assert info.value.reason is Reason.SERVER_BUSY
        assert info.value.retry_after_s is not None and 0.05 <= info.value.retry_after_s <= 10
        # An upload is refused the same way, however much of it the client has queued.
        with pytest.raises(ServerBusy) as up:
            b.submit(b_signed, b_data)
        assert up.value.reason is Reason.SERVER_BUSY and up.value.retry_after_s is not None
        # Load shedding, not a refusal: nothing in the store or the ledger.
        assert server.store.rejections(server.rounds.federation_id) == []
        assert b"server_busy" not in (harness.tmp / "state" / "ledger.jsonl").read_bytes()
    finally:
        go_on.set()
        uploader.join(30)
    assert outcome and outcome[0].accepted
    assert server.slots.in_use == 0
    assert b.submit(b_signed, b_data).accepted  # the slot is free again
