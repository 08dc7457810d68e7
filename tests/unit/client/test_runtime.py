from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee import tensors
from fedtee.client.cheats import TamperingTransport, flip_last_bit
from fedtee.client.examples.digits import DigitsTrainer
from fedtee.client.runtime import (
    ClientEvent,
    ClientRuntime,
    EnrolmentRejected,
    RuntimeOptions,
)
from fedtee.client.transport import (
    ServerBusy,
    ServerUnavailable,
    Session,
    Task,
    TaskKind,
    Transport,
)
from fedtee.errors import ProtocolError, Reason

from ._fakes import MEASUREMENT, FakeAttester, FakeServer


def _runtime(
    server: Transport, *, attester: FakeAttester | None = None, **opts: object
) -> tuple[ClientRuntime, list[ClientEvent], list[float]]:
    events: list[ClientEvent] = []
    sleeps: list[float] = []
    runtime = ClientRuntime(
        client_id="c1",
        transport=server,
        attester=attester or FakeAttester(),
        trainer=DigitsTrainer(partition=0, num_partitions=3, seed=0),
        measurement=MEASUREMENT,
        options=RuntimeOptions(chunk_bytes=256, **opts),  # type: ignore[arg-type]
        sleep=sleeps.append,
        clock_ms=lambda: 1_000,
        on_event=events.append,
        rng=random.Random(0),
    )
    return runtime, events, sleeps


def test_honest_client_enrols_trains_every_round_and_finishes() -> None:
    server = FakeServer(rounds=3)
    runtime, events, _ = _runtime(server)
    summary = runtime.run()
    assert summary.finished
    assert summary.accepted == 3 and summary.rejected == []
    assert server.submitted == [(1, "accepted"), (2, "accepted"), (3, "accepted")]
    assert [e.kind for e in events].count("update_accepted") == 3
    enrolled = next(e for e in events if e.kind == "enrolled")
    assert "SIMULATED" in enrolled.detail and "not hardware-backed" in enrolled.detail


def test_update_after_signing_is_rejected_with_its_digest_reason() -> None:
    server = FakeServer(rounds=2)
    cheat = TamperingTransport(server)
    runtime, events, _ = _runtime(cheat)
    summary = runtime.run()
    assert cheat.tampered == 2
    assert summary.accepted == 0
    assert summary.rejected == [(1, "update_digest_mismatch"), (2, "update_digest_mismatch")]
    assert any(e.kind == "update_rejected" and e.reason == "update_digest_mismatch" for e in events)


def test_unlisted_measurement_is_rejected_at_enrolment_with_its_reason() -> None:
    server = FakeServer()
    runtime, events, _ = _runtime(server, attester=FakeAttester(measurement=b"\x01" * 48))
    with pytest.raises(EnrolmentRejected) as info:
        runtime.run()
    assert info.value.reason is Reason.MEASUREMENT_NOT_ALLOWED
    assert server.submitted == []
    assert events[-1].kind == "enrol_rejected"


def test_evidence_binds_the_servers_nonce_and_the_clients_key() -> None:
    # The fake server runs the real check_report_data; an attester that ignores the
    # report_data it is given is rejected with REPORT_DATA_MISMATCH.
    class Lazy(FakeAttester):
        def attest(self, report_data: bytes):  # type: ignore[no-untyped-def]
            return super().attest(b"\x00" * 64)

    runtime, _, _ = _runtime(FakeServer(), attester=Lazy())
    with pytest.raises(EnrolmentRejected) as info:
        runtime.enroll()
    assert info.value.reason is Reason.REPORT_DATA_MISMATCH


def test_download_resumes_from_the_offset_where_the_stream_dropped() -> None:
    server = FakeServer(rounds=1, drop_download_once_at=300, chunk=100)
    runtime, _, sleeps = _runtime(server)
    summary = runtime.run()
    assert summary.accepted == 1
    assert server.download_offsets == [0, 300]
    assert len(sleeps) == 1


def test_download_rejects_a_model_whose_digest_differs() -> None:
    server = FakeServer()
    runtime, _, _ = _runtime(server)
    session = runtime.enroll()
    task = server.get_task(session=session)
    wrong = Task(**{**task.__dict__, "global_model_digest": b"\x00" * 32})
    with pytest.raises(ProtocolError) as info:
        runtime.download(session, wrong)
    assert info.value.reason is Reason.MODEL_DIGEST_MISMATCH


def test_download_bounds_the_model_size_before_reading() -> None:
    server = FakeServer()
    runtime, _, _ = _runtime(server, max_model_bytes=100)
    session = runtime.enroll()
    task = server.get_task(session=session)
    with pytest.raises(ProtocolError) as info:
        runtime.download(session, task)
    assert info.value.reason is Reason.MESSAGE_TOO_LARGE
    assert server.download_offsets == []


def test_download_rejects_chunks_out_of_order() -> None:
    class Shuffled(FakeServer):
        def download_model(self, **kw):  # type: ignore[no-untyped-def, override]
            chunks = list(super().download_model(**kw))
            return iter(chunks[1:] + chunks[:1])

    server = Shuffled()
    runtime, _, _ = _runtime(server)
    session = runtime.enroll()
    with pytest.raises(ProtocolError) as info:
        runtime.download(session, server.get_task(session=session))
    assert info.value.reason is Reason.MESSAGE_MALFORMED


def test_reconnects_with_backoff_then_gives_up() -> None:
    server = FakeServer(rounds=1, unavailable_calls=3)
    runtime, _, sleeps = _runtime(server)
    assert runtime.run().accepted == 1
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]  # exponential, with jitter

    dead = FakeServer(unavailable_calls=100)
    runtime2, _, sleeps2 = _runtime(dead, max_reconnect_attempts=4)
    with pytest.raises(ServerUnavailable) as info:
        runtime2.run()
    assert info.value.reason is Reason.SERVER_UNAVAILABLE
    assert len(sleeps2) == 3


class _Shedding(FakeServer):
    """The first ``busy_calls`` get_task calls are shed, as a server past its call limit."""

    def __init__(self, busy_calls: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.busy_calls = busy_calls

    def get_task(self, *, session: Session) -> Task:
        if self.busy_calls > 0:
            self.busy_calls -= 1
            raise ServerBusy("GetTask: RESOURCE_EXHAUSTED: Concurrent RPC limit exceeded!")
        return super().get_task(session=session)


def test_a_busy_server_is_asked_again_beyond_the_reconnect_attempts() -> None:
    # 30 shed answers, far more than max_reconnect_attempts, within the busy budget.
    server = _Shedding(30, rounds=1)
    runtime, events, sleeps = _runtime(server, max_reconnect_attempts=3)
    assert runtime.run().accepted == 1
    assert len(sleeps) == 30
    assert max(sleeps) <= 5.0  # backoff capped at backoff_max_s
    assert any(e.kind == "reconnecting" and "Concurrent RPC" in e.detail for e in events)


def test_a_server_busy_beyond_the_budget_is_given_up_on() -> None:
    server = _Shedding(10_000, rounds=1)
    runtime, _, sleeps = _runtime(server, max_busy_s=20.0)
    with pytest.raises(ServerBusy) as info:
        runtime.run()
    assert info.value.reason is Reason.SERVER_BUSY
    assert "still busy" in info.value.message
    assert 20.0 <= sum(sleeps) < 20.0 + 5.0 + 1e-9


class _SlotsTaken(FakeServer):
    """The first ``busy_calls`` downloads find every transfer slot taken (server_busy with a
    retry_after hint of ``hint_s``)."""

    def __init__(self, busy_calls: int, hint_s: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.busy_calls = busy_calls
        self.hint_s = hint_s

    def download_model(self, **kw: Any) -> Any:
        if self.busy_calls > 0:
            self.busy_calls -= 1
            raise ServerBusy("DownloadModel: all slots in use", retry_after_s=self.hint_s)
        return super().download_model(**kw)


def test_a_server_busy_hint_sets_the_wait_not_the_backoff() -> None:
    server = _SlotsTaken(6, hint_s=0.4, rounds=1)
    runtime, _, sleeps = _runtime(server, max_reconnect_attempts=2)
    assert runtime.run().accepted == 1
    assert len(sleeps) == 6
    # Jittered around the hint (0.5x to 1.5x), not the doubling backoff.
    assert all(0.2 <= s <= 0.6 for s in sleeps), sleeps


def test_a_server_busy_hint_is_capped_like_any_retry_after() -> None:
    server = _SlotsTaken(3, hint_s=60.0, rounds=1)
    runtime, _, sleeps = _runtime(server, max_wait_s=2.0)
    assert runtime.run().accepted == 1
    assert len(sleeps) == 3 and all(1.0 <= s <= 3.0 for s in sleeps), sleeps


def test_reattest_task_enrols_again_with_a_fresh_key() -> None:
    server = FakeServer(rounds=2, reattest_on_round=2)
    attester = FakeAttester()
    runtime, _, _ = _runtime(server, attester=attester)
    summary = runtime.run()
    assert summary.enrolments == 2 and attester.calls == 2
    assert summary.accepted == 2


def test_wait_sleeps_as_told_but_capped() -> None:
    class Waiting(FakeServer):
        waits = 2

        def get_task(self, *, session):  # type: ignore[no-untyped-def]
            if self.waits:
                self.waits -= 1
                return Task(kind=TaskKind.WAIT, retry_after_ms=600_000)
            return super().get_task(session=session)

    runtime, _, sleeps = _runtime(Waiting(rounds=1), max_wait_s=2.0)
    assert runtime.run().accepted == 1
    assert sleeps == [2.0, 2.0]


def test_receipt_names_exactly_the_bytes_sent_and_the_model_received() -> None:
    server = FakeServer()
    runtime, _, _ = _runtime(server)
    session = runtime.enroll()
    task = server.get_task(session=session)
    model = runtime.download(session, task)
    signed, update = runtime.make_update(session, task, model)
    from fedtee.ledger.receipts import verify_receipt

    receipt = verify_receipt(signed, server.keys["c1"])
    assert receipt.update_digest == tensors.digest(update.tobytes())
    assert receipt.global_model_digest == tensors.digest(model)
    assert receipt.measurement == MEASUREMENT and receipt.round == 1
    assert receipt.num_examples == len(runtime.trainer.data)  # type: ignore[attr-defined]


def test_flip_last_bit_changes_one_bit_only() -> None:
    data = [b"abc", b"def"]
    out = b"".join(flip_last_bit(data))
    assert out[:-1] == b"abcde" and out[-1] == ord("f") ^ 1
    assert list(flip_last_bit([])) == []
    assert np.count_nonzero(np.frombuffer(out, np.uint8) ^ np.frombuffer(b"abcdef", np.uint8)) == 1
    # The runtime's chunks are read-only views: the flipped copy leaves the model alone.
    source = bytearray(b"abcdef")
    views = [memoryview(source)[:3].toreadonly(), memoryview(source)[3:].toreadonly()]
    assert b"".join(flip_last_bit(views)) == out and source == b"abcdef"


def test_expired_credential_on_a_call_leads_to_one_reenrolment() -> None:
    from fedtee.errors import CredentialError

    class Expiring(FakeServer):
        expired_once = False

        def get_task(self, *, session):  # type: ignore[no-untyped-def]
            if not self.expired_once:
                self.expired_once = True
                raise CredentialError("expired", reason=Reason.CREDENTIAL_EXPIRED)
            return super().get_task(session=session)

    server = Expiring(rounds=1)
    runtime, events, _ = _runtime(server)
    summary = runtime.run()
    assert summary.enrolments == 2 and summary.accepted == 1
    assert any(e.kind == "reattesting" and e.reason == "credential_expired" for e in events)


def test_forged_credential_error_is_not_retried() -> None:
    from fedtee.errors import CredentialError

    class Forged(FakeServer):
        def get_task(self, *, session):  # type: ignore[no-untyped-def]
            raise CredentialError("bad", reason=Reason.CREDENTIAL_INVALID)

    runtime, _, _ = _runtime(Forged())
    with pytest.raises(CredentialError):
        runtime.run()
    assert runtime.summary.enrolments == 1


def test_short_lived_credentials_do_not_cause_an_enrolment_loop() -> None:
    class ShortLived(FakeServer):
        def enroll(self, **kw):  # type: ignore[no-untyped-def]
            result = super().enroll(**kw)
            return type(result)(**{**result.__dict__, "credential_expires_unix_ms": 1_000 + 2_000})

    server = ShortLived(rounds=2)
    runtime, _, _ = _runtime(server)  # clock fixed at 1_000 ms, margin 5_000 ms > TTL
    summary = runtime.run()
    assert summary.accepted == 2 and summary.enrolments == 1


def test_a_dropped_enroll_is_redone_with_a_fresh_challenge() -> None:
    class Dropping(FakeServer):
        drops = 1

        def enroll(self, **kw):  # type: ignore[no-untyped-def]
            result = super().enroll(**kw)  # the server consumed the nonce...
            if self.drops:
                self.drops -= 1
                raise ServerUnavailable("connection reset")  # ...but the reply was lost
            return result

    server = Dropping(rounds=1)
    attester = FakeAttester()
    runtime, _, sleeps = _runtime(server, attester=attester)
    assert runtime.run().accepted == 1
    assert attester.calls == 2 and len(sleeps) == 1


def test_the_client_side_imports_no_server_or_heavy_packages() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import fedtee.client.runtime, fedtee.client.grpc_transport, fedtee.client.cheats\n"
        "heavy = {'cbor2', 'safetensors', 'sqlalchemy', 'rich', 'sklearn', 'torch'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('fedtee.server')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["[]", "[]"]


def test_chunk_size_is_bounded_by_the_servers_chunk_limit() -> None:
    from fedtee.errors import ConfigError
    from fedtee.wire.limits import DEFAULT_LIMITS

    RuntimeOptions(chunk_bytes=DEFAULT_LIMITS.chunk_bytes)
    with pytest.raises(ConfigError):
        RuntimeOptions(chunk_bytes=DEFAULT_LIMITS.chunk_bytes + 1)
    with pytest.raises(ConfigError):
        RuntimeOptions(chunk_bytes=0)


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=6000),  # offset
            st.integers(min_value=0, max_value=6000),  # total_size
            st.binary(max_size=700),
        ),
        max_size=12,
    )
)
def test_download_from_a_hostile_stream_returns_the_model_or_a_typed_error(
    chunks: list[tuple[int, int, bytes]],
) -> None:
    from fedtee.client.transport import ModelChunk
    from fedtee.errors import FedteeError

    class Hostile(FakeServer):
        def download_model(self, **kw):  # type: ignore[no-untyped-def, override]
            return iter(ModelChunk(data=d, offset=o, total_size=t) for o, t, d in chunks)

    server = Hostile()
    runtime, _, _ = _runtime(server, max_reconnect_attempts=2)
    session = runtime.enroll()
    task = server.get_task(session=session)
    try:
        got = runtime.download(session, task)
    except FedteeError:
        return
    assert got == server.model
