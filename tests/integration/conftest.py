"""A real FederationServer on loopback TLS gRPC with a SQLite file, and small test clients
built from fedtee.wire (via the client's GrpcTransport)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedtee import identity, tensors
from fedtee.attest.binding import report_data
from fedtee.attest.model import TeeType
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.transport import Enrolment, Session, SubmitOutcome, Task, TaskKind
from fedtee.ledger.receipts import Receipt, SignedReceipt, sign_receipt
from fedtee.server.app import FederationServer, NoCollateral, ServerConfig
from fedtee.server.gate import GateSettings
from fedtee.server.rounds import RoundSettings
from fedtee.server.slots import DEFAULT_SEND_CHUNK_BYTES
from fedtee.wire import tls

from ._sim_seam import Attestation, make_attestation

GOOD = bytes.fromhex("a1" * 48)
FED = "fed-it"


class Clock:
    """Real time plus an offset a test can advance (proofs of possession use real time)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def initial_model() -> bytes:
    return tensors.encode(
        {"w": np.zeros((4, 3), dtype=np.float32), "b": np.zeros((3,), dtype=np.float32)}
    )


@dataclass
class Harness:
    tmp: Path
    att: Attestation
    clock: Clock = field(default_factory=Clock)
    ca: tls.CertAndKey | None = None
    server: FederationServer | None = None
    peers: list[Peer] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def start(self, **settings: Any) -> FederationServer:
        now = datetime.now(UTC)
        if self.ca is None:
            self.ca = tls.make_ca(name="it CA", now=now)
        self.settings = settings or self.settings
        s = dict(self.settings)
        cert = tls.make_server_cert(self.ca, now=now)
        config = ServerConfig(
            federation_id=FED,
            address="127.0.0.1:0",
            tls_cert_pem=cert.cert_pem,
            tls_key_pem=cert.key_pem,
            state_dir=self.tmp / "state",
            policy=s.pop("policy", None) or self.att.policy(s.pop("measurements", [GOOD])),
            trust=s.pop("trust", None) or self.att.trust,
            collateral=s.pop("collateral", None) or NoCollateral(),  # e.g. DCAP's TCB info
            initial_model=s.pop("initial_model", None) or initial_model(),
            rounds=RoundSettings(
                rounds=s.pop("rounds", 2),
                clients_per_round=s.pop("clients_per_round", 2),
                min_clients=s.pop("min_clients", 1),
                round_timeout_ms=s.pop("round_timeout_ms", 20_000),
                start_wait_ms=s.pop("start_wait_ms", 10_000),
                retry_after_ms=50,
            ),
            gate=GateSettings(credential_ttl_ms=s.pop("credential_ttl_ms", 600_000)),
            upload_grace_ms=s.pop("upload_grace_ms", 5_000),
            attester=s.pop("attester", None),  # mutual attestation: the server's own TEE
            server_evidence_per_s=s.pop("server_evidence_per_s", 10.0),
            max_transfers=s.pop("max_transfers", 16),
            transfer_wait_s=s.pop("transfer_wait_s", 10.0),
            transfer_idle_s=s.pop("transfer_idle_s", 120.0),
            tick_s=s.pop("tick_s", 0.05),
            trim_interval_s=s.pop("trim_interval_s", 0.0),
            send_chunk_bytes=s.pop("send_chunk_bytes", DEFAULT_SEND_CHUNK_BYTES),
        )
        assert not s, f"unknown settings {s}"
        self.server = FederationServer(config, clock=self.clock, evaluate=self.att.evaluate)
        self.server.start()
        return self.server

    def stop(self) -> None:
        for p in self.peers:
            p.close()
        self.peers.clear()
        if self.server is not None:
            self.server.stop(grace_s=0.2)
            self.server = None

    def peer(self, client_id: str, **kwargs: Any) -> Peer:
        assert self.server is not None and self.ca is not None
        p = Peer(self, client_id, **kwargs)
        self.peers.append(p)
        return p


class Peer:
    def __init__(
        self,
        h: Harness,
        client_id: str,
        *,
        measurement: bytes = GOOD,
        debug: bool = False,
        key: identity.PrivateKey | None = None,
        platform: bytes | None = None,
    ) -> None:
        assert h.server is not None and h.ca is not None
        self.h = h
        self.client_id = client_id
        self.measurement = measurement
        self.key = key or identity.generate()
        self.public_key = identity.public_key_der(self.key)
        self.platform = platform or os.urandom(16)
        self.attester = h.att.attester(measurement=measurement, platform=self.platform, debug=debug)
        self.transport = GrpcTransport.connect(
            address=f"127.0.0.1:{h.server.port}", ca_pem=h.ca.cert_pem, server_name="localhost"
        )
        self.session: Session | None = None
        self.last_signed: SignedReceipt | None = None
        self.last_update: bytes = b""

    def close(self) -> None:
        self.transport.close()

    def enroll(
        self, *, send_nonce: bytes | None = None, bind_key: bytes | None = None
    ) -> Enrolment:
        ch = self.transport.get_challenge(client_id=self.client_id, tee=TeeType.SIM, aux={})
        nonce = send_nonce or ch.nonce
        rd = report_data(nonce=nonce, public_key=bind_key or self.public_key, size=64)
        evidence = self.attester.attest(rd)
        out = self.transport.enroll(
            client_id=self.client_id, nonce=nonce, public_key=self.public_key, evidence=evidence
        )
        if out.accepted:
            self.session = Session(
                client_id=self.client_id,
                credential=out.credential,
                private_key=self.key,
                expires_unix_ms=out.credential_expires_unix_ms,
            )
        return out

    def task(self) -> Task:
        assert self.session is not None
        return self.transport.get_task(session=self.session)

    def wait_task(self, kind: TaskKind = TaskKind.TRAIN, timeout_s: float = 15) -> Task:
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        while True:
            task = self.task()
            if task.kind is kind:
                return task
            assert datetime.now(UTC) < deadline, f"no {kind} task for {self.client_id}: {task}"
            import time

            time.sleep(0.05)

    def download(self, task: Task) -> bytes:
        assert self.session is not None
        return b"".join(
            c.data
            for c in self.transport.download_model(
                session=self.session,
                round=task.round,
                digest=task.global_model_digest,
                offset=0,
            )
        )

    def make_update(self, task: Task, *, delta: float = 1.0) -> tuple[SignedReceipt, bytes]:
        model = self.download(task)
        assert tensors.digest(model) == task.global_model_digest
        arrays = tensors.decode(model)
        update = tensors.encode({k: v + np.float32(delta) for k, v in arrays.items()})
        receipt = Receipt(
            federation_id=task.federation_id,
            round=task.round,
            client_id=self.client_id,
            global_model_digest=task.global_model_digest,
            update_digest=tensors.digest(update),
            num_examples=10,
            measurement=self.measurement,
        )
        return sign_receipt(receipt, self.key), update

    def submit(
        self, signed: SignedReceipt, data: bytes, chunks: Iterable[bytes] | None = None
    ) -> SubmitOutcome:
        assert self.session is not None
        self.last_signed, self.last_update = signed, data
        return self.transport.submit_update(
            session=self.session,
            receipt=signed,
            size=len(data),
            chunks=chunks
            if chunks is not None
            else [data[i : i + 64] for i in range(0, len(data), 64)],
        )

    def train(self, *, delta: float = 1.0) -> SubmitOutcome:
        task = self.wait_task()
        signed, data = self.make_update(task, delta=delta)
        return self.submit(signed, data)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp=tmp_path, att=make_attestation())
    yield h
    h.stop()
