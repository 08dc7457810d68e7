"""The load generator's bookkeeping when a virtual client fails (no server needed: the
clients' run() is replaced, the channels are never used)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fedtee.attest.attesters.sim import SimRoot
from fedtee.errors import FedteeError, Reason
from fedtee.eval import loadgen
from fedtee.eval.loadgen import LoadOptions, LoadTarget, run_load


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
