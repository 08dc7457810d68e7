"""The load generator's bookkeeping when a virtual client fails (no server needed: the
clients' run() is replaced, the channels are never used)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator
from typing import Any

import grpc
import grpc.aio
import pytest

from fedtee import identity
from fedtee.attest.attesters.sim import SimRoot
from fedtee.errors import FedteeError, Reason
from fedtee.eval import loadgen
from fedtee.eval.loadgen import LoadOptions, LoadTarget, run_load
from fedtee.ledger.receipts import Receipt, sign_receipt
from fedtee.wire import auth, serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb


class _Refused(FedteeError):
    pass


@pytest.fixture
def target() -> LoadTarget:
    # A port nothing listens on: the replaced run() never makes a call.
    return LoadTarget(
        address="127.0.0.1:9",
        ca_pem=b"",
        sim_root=SimRoot.generate(),
        measurement=bytes(48),
    )


@pytest.fixture
def one_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    async def run(self: loadgen.VirtualClient) -> None:
        if self.result.client_id.endswith("-1"):
            raise _Refused("refused for the test", reason=Reason.CREDENTIAL_EXPIRED)
        await asyncio.sleep(3600)  # would keep the load going for an hour

    monkeypatch.setattr(loadgen.VirtualClient, "run", run)


@pytest.mark.usefixtures("one_fails")
def test_abort_on_error_stops_the_others_and_reports_the_failure(
    target: LoadTarget, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="fedtee.eval.loadgen"):
        report = asyncio.run(
            asyncio.wait_for(
                run_load(target, LoadOptions(clients=3, abort_on_error=True)), timeout=60
            )
        )
    assert report.errors == 1
    assert report.error_reasons == {Reason.CREDENTIAL_EXPIRED.value: 1}
    assert report.finished == 0
    assert not report.ok
    failed = [r for r in report.results if r.error]
    assert [r.client_id for r in failed] == ["load-1"]
    # Said when it happened, with the client and its reason.
    assert any(
        "load-1 stopped" in m and Reason.CREDENTIAL_EXPIRED.value in m for m in caplog.messages
    )


@pytest.mark.usefixtures("one_fails")
def test_without_abort_a_failure_leaves_the_others_running(target: LoadTarget) -> None:
    async def go() -> None:
        await run_load(target, LoadOptions(clients=3))

    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(go(), timeout=1.0))


# --- SubmitUpdate: grpc.aio's INTERNAL before and after the server's go ------------------------


class _Call:
    """A SubmitUpdate call as grpc.aio hands it out: refused before the go (gRPC core at its
    limit of calls in flight), or taken (the go) and then failed with ``fails``."""

    def __init__(self, *, go: bool, fails: grpc.StatusCode | None = None) -> None:
        self.go, self.fails = go, fails
        self.fails_writing = False
        self.data_written = 0

    @staticmethod
    def _error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
        return grpc.aio.AioRpcError(
            code,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(("fedtee-reason", "update_malformed")),
            "Internal error from Core" if code is grpc.StatusCode.INTERNAL else "no",
        )

    async def write(self, message: object) -> None:
        # Data goes out in wire format (serde.update_data_to_wire), the header as a message.
        parsed = serde.update_chunk_from_wire(serde.to_wire(message))
        if self.go and isinstance(parsed, serde.UpdateDataView):
            self.data_written += 1
            if self.fails_writing:  # the write itself raises, as grpc.aio may
                raise self._error(grpc.StatusCode.INTERNAL)

    async def initial_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((auth.UPLOAD_GO_KEY, auth.UPLOAD_GO),) if self.go else ()

    async def done_writing(self) -> None:
        if not self.go:
            raise asyncio.InvalidStateError("the call has ended")

    def __await__(self) -> Generator[Any, None, Any]:
        if self.fails is not None:
            raise self._error(self.fails)
        return pb.SubmitResult(accepted=True)
        yield  # pragma: no cover - makes this a generator


class _Stub:
    def __init__(self, calls: list[_Call]) -> None:
        self.calls = calls
        self.made: list[_Call] = []

    def SubmitUpdate(self, **_: object) -> _Call:
        call = self.calls[len(self.made)]
        self.made.append(call)
        return call


def _submit(target: LoadTarget, stub: _Stub) -> tuple[loadgen.VirtualClient, object]:
    client = loadgen.VirtualClient(
        client_id="load-1",
        stub=stub,
        target=target,
        options=LoadOptions(clients=1, max_attempts=3),
    )
    receipt = Receipt(
        federation_id="f",
        round=1,
        client_id="load-1",
        global_model_digest=bytes(32),
        update_digest=bytes(32),
        num_examples=1,
        measurement=bytes(48),
    )
    signed = sign_receipt(receipt, identity.generate())
    return client, asyncio.run(client.submit(signed, b"x" * 100))


@pytest.mark.parametrize("go", [False, True], ids=["before the go", "after the go"])
def test_an_upload_grpc_aio_ends_as_internal_is_asked_again(go: bool, target: LoadTarget) -> None:
    stub = _Stub([_Call(go=go, fails=grpc.StatusCode.INTERNAL), _Call(go=True)])
    client, outcome = _submit(target, stub)
    assert getattr(outcome, "accepted", None) is True
    assert len(stub.made) == 2
    assert (stub.made[0].data_written > 0) is go  # before the go, no data left the client
    assert stub.made[1].data_written > 0
    assert client.result.retries == 1
    kind = "after" if go else "before"
    assert client.result.retry_kinds == {f"SubmitUpdate INTERNAL {kind} the go": 1}


def test_a_refusal_with_its_status_after_the_go_is_not_asked_again(target: LoadTarget) -> None:
    stub = _Stub([_Call(go=True, fails=grpc.StatusCode.INVALID_ARGUMENT), _Call(go=True)])
    with pytest.raises(FedteeError):
        _submit(target, stub)
    assert len(stub.made) == 1


def test_an_internal_error_a_data_write_raises_is_asked_again(target: LoadTarget) -> None:
    failing = _Call(go=True)
    failing.fails_writing = True
    stub = _Stub([failing, _Call(go=True)])
    client, outcome = _submit(target, stub)
    assert getattr(outcome, "accepted", None) is True
    assert client.result.retry_kinds == {"SubmitUpdate INTERNAL after the go": 1}
