"""The real client runtime against the real FederationServer over loopback TLS gRPC.

Attestation here is a unit seam (this file is about the client/server protocol: enrolment
bookkeeping, proof of possession, chunked downloads and uploads, receipts, rejection
reasons, the ledger): a tiny sim-shaped evidence whose evaluate checks report_data with the
real fedtee.attest.binding and the measurement against an allow-list.
"""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fedtee import tensors
from fedtee.attest.binding import check_report_data
from fedtee.attest.model import _SEAL, Evidence, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.client.cheats import TamperingTransport
from fedtee.client.examples import digits
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientRuntime, EnrolmentRejected, RunSummary, RuntimeOptions
from fedtee.errors import AttestationError, FedteeError, Reason
from fedtee.ledger.log import verify_ledger
from fedtee.server.app import FederationServer, ServerConfig
from fedtee.server.rounds import RoundSettings
from fedtee.wire import tls

GOOD = bytes.fromhex("11" * 48)
BAD = bytes.fromhex("22" * 48)


class _Attester:
    tee = TeeType.SIM
    report_data_size = 64

    def __init__(self, measurement: bytes, platform: bytes) -> None:
        self.measurement, self.platform = measurement, platform

    def attest(self, report_data: bytes) -> Evidence:
        body = {"m": self.measurement.hex(), "rd": report_data.hex(), "p": self.platform.hex()}
        return Evidence(TeeType.SIM, json.dumps(body).encode())


@dataclass(frozen=True)
class _Violation:
    reason: Reason
    field: str = ""
    found: str = ""
    expected: str = ""


@dataclass(frozen=True)
class _Result:
    status: str
    violations: tuple[_Violation, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"status": self.status, "tee": "sim", "hardware_backed": False})


@dataclass(frozen=True)
class _Evaluation:
    result: _Result
    verified: VerifiedEvidence | None


def _evaluate(evidence: Evidence, *, policy: Any, now: datetime, nonce: bytes | None,
              public_key: bytes | None, **_: Any) -> _Evaluation:  # fmt: skip
    body = json.loads(evidence.data)
    verified = VerifiedEvidence(
        tee=TeeType.SIM,
        report_data=bytes.fromhex(body["rd"]),
        measurements={"measurement": bytes.fromhex(body["m"])},
        debug=False,
        platform_id=bytes.fromhex(body["p"]),
        code_identity=bytes.fromhex(body["m"]),
        tcb_status=TcbStatus.NOT_APPLICABLE,
        svns={},
        hardware_backed=False,
        claims={},
        verified_at=now,
        seal=_SEAL,
    )
    try:
        assert nonce is not None and public_key is not None
        check_report_data(found=verified.report_data, nonce=nonce, public_key=public_key)
    except AttestationError as exc:
        return _Evaluation(_Result("contraindicated", (_Violation(exc.reason),)), None)
    if verified.code_identity not in policy:
        return _Evaluation(
            _Result("contraindicated", (_Violation(Reason.MEASUREMENT_NOT_ALLOWED),)), verified
        )
    return _Evaluation(_Result("affirming"), verified)


@pytest.fixture()
def federation(tmp_path: Path) -> Any:
    now = datetime.now(UTC)
    ca = tls.make_ca(name="ca", now=now)
    leaf = tls.make_server_cert(ca, now=now)
    server = FederationServer(
        ServerConfig(
            federation_id="fed-int",
            address="127.0.0.1:0",
            tls_cert_pem=leaf.cert_pem,
            tls_key_pem=leaf.key_pem,
            state_dir=tmp_path / "state",
            policy=(GOOD,),
            trust=TrustAnchors(),
            initial_model=tensors.encode(digits.initial_arrays(0)),
            rounds=RoundSettings(
                rounds=2,
                clients_per_round=3,
                min_clients=2,
                round_timeout_ms=6_000,
                start_wait_ms=2_000,
                retry_after_ms=100,
                config={"local_epochs": "2"},
            ),
        ),
        evaluate=_evaluate,
    )
    port = server.start()
    try:
        yield server, port, ca.cert_pem
    finally:
        server.stop()


def _run(client_id: str, port: int, ca_pem: bytes, *, measurement: bytes, partition: int,
         tamper: bool = False) -> RunSummary | FedteeError:  # fmt: skip
    transport: Any = GrpcTransport.connect(address=f"127.0.0.1:{port}", ca_pem=ca_pem)
    if tamper:
        transport = TamperingTransport(transport)
    runtime = ClientRuntime(
        client_id=client_id,
        transport=transport,
        attester=_Attester(measurement, platform=client_id.encode().ljust(8, b"\0")),
        trainer=digits.DigitsTrainer(partition=partition, num_partitions=2, seed=0),
        measurement=measurement,
        options=RuntimeOptions(chunk_bytes=1024, max_reconnect_attempts=3, max_wait_s=0.2),
        rng=random.Random(0),
    )
    try:
        return runtime.run()
    except FedteeError as exc:
        exc.summary = runtime.summary  # type: ignore[attr-defined]
        return exc
    finally:
        transport.close()


def test_honest_clients_finish_and_both_cheaters_are_rejected_with_their_reasons(
    federation: Any,
) -> None:
    server, port, ca_pem = federation
    results: dict[str, RunSummary | FedteeError] = {}
    specs = {
        "honest-1": {"measurement": GOOD, "partition": 0},
        "honest-2": {"measurement": GOOD, "partition": 1},
        "tamper": {"measurement": GOOD, "partition": 0, "tamper": True},
        "modified": {"measurement": BAD, "partition": 1},
    }
    threads = [
        threading.Thread(
            target=lambda cid=cid, kw=kw: results.__setitem__(cid, _run(cid, port, ca_pem, **kw))
        )
        for cid, kw in specs.items()
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert server.wait_finished(timeout_s=30)

    for cid in ("honest-1", "honest-2"):
        summary = results[cid]
        assert isinstance(summary, RunSummary), summary
        assert summary.finished and summary.accepted >= 1 and summary.rejected == []

    modified = results["modified"]
    assert isinstance(modified, EnrolmentRejected)
    assert modified.reason is Reason.MEASUREMENT_NOT_ALLOWED

    tamper = results["tamper"]
    rejected = tamper.rejected if isinstance(tamper, RunSummary) else tamper.summary.rejected  # type: ignore[attr-defined]
    assert rejected and rejected[0][1] == Reason.UPDATE_DIGEST_MISMATCH.value

    store = server.store
    reasons = {(r.client_id, r.reason) for r in store.rejections("fed-int")}
    assert ("modified", Reason.MEASUREMENT_NOT_ALLOWED) in reasons
    assert ("tamper", Reason.UPDATE_DIGEST_MISMATCH) in reasons

    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert report.final_model_digest
    contributors = {c.client_id for r in report.lineage for c in r.contributions}
    assert contributors == {"honest-1", "honest-2"}
    final = server.store.rounds("fed-int")[-1].output_model_digest
    from fedtee.server.artifacts import ArtifactStore

    arrays = ArtifactStore(server.paths.artifacts).load_arrays(final)
    assert digits.global_accuracy(arrays) > 0.8


def test_clients_ride_out_a_server_restart_and_finish(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ca = tls.make_ca(name="ca", now=now)
    leaf = tls.make_server_cert(ca, now=now)

    def config(address: str) -> ServerConfig:
        return ServerConfig(
            federation_id="fed-restart",
            address=address,
            tls_cert_pem=leaf.cert_pem,
            tls_key_pem=leaf.key_pem,
            state_dir=tmp_path / "state",
            policy=(GOOD,),
            trust=TrustAnchors(),
            initial_model=tensors.encode(digits.initial_arrays(0)),
            rounds=RoundSettings(
                rounds=3,
                clients_per_round=2,
                min_clients=2,
                round_timeout_ms=20_000,
                start_wait_ms=1_000,
                retry_after_ms=100,
                config={"local_epochs": "1"},
            ),
        )

    first = FederationServer(config("127.0.0.1:0"), evaluate=_evaluate)
    port = first.start()
    results: dict[str, Any] = {}

    def client(cid: str, partition: int) -> None:
        transport = GrpcTransport.connect(address=f"127.0.0.1:{port}", ca_pem=ca.cert_pem)
        runtime = ClientRuntime(
            client_id=cid,
            transport=transport,
            attester=_Attester(GOOD, platform=cid.encode()),
            trainer=digits.DigitsTrainer(partition=partition, num_partitions=2, seed=0),
            measurement=GOOD,
            options=RuntimeOptions(
                max_reconnect_attempts=30, backoff_initial_s=0.1, backoff_max_s=0.5, max_wait_s=0.2
            ),
            rng=random.Random(0),
        )
        try:
            results[cid] = runtime.run()
        except FedteeError as exc:  # pragma: no cover - reported by the assertions below
            results[cid] = exc
        finally:
            transport.close()

    threads = [threading.Thread(target=client, args=(f"r-{k}", k)) for k in range(2)]
    for t in threads:
        t.start()
    second = None
    try:
        # Let round 1 complete, then kill the server and start a fresh one on the same state.
        deadline = datetime.now(UTC).timestamp() + 30
        while datetime.now(UTC).timestamp() < deadline:
            rounds = first.store.rounds("fed-restart") if first.store else []
            if any(r.output_model_digest for r in rounds):
                break
            threading.Event().wait(0.05)
        first.stop(grace_s=5)  # in-process: let in-flight handlers finish writing
        second = FederationServer(config(f"127.0.0.1:{port}"), evaluate=_evaluate)
        second.start()
        for t in threads:
            t.join(timeout=90)
        assert second.wait_finished(timeout_s=30)
    finally:
        if second is not None:
            second.stop()
    for cid in ("r-0", "r-1"):
        summary = results[cid]
        assert isinstance(summary, RunSummary), summary
        assert summary.finished and summary.rejected == []
        assert summary.enrolments == 1  # the restarted server still honours the credential
    report = verify_ledger(
        (tmp_path / "state" / "ledger.jsonl").read_bytes(), server_public_key=None
    )
    assert [r.round for r in report.lineage] == [1, 2, 3]
