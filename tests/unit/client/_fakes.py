"""An in-memory federation server speaking the client Transport, using the real receipt,
binding and tensor code, so runtime tests exercise the same checks a server makes."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedtee import tensors
from fedtee.attest.binding import check_report_data
from fedtee.attest.model import Evidence, TeeType
from fedtee.client.runtime import ClientEvent, ClientRuntime, RuntimeOptions
from fedtee.client.transport import (
    Challenge,
    Enrolment,
    ModelChunk,
    ServerUnavailable,
    Session,
    SubmitOutcome,
    Task,
    TaskKind,
    UploadStatus,
)
from fedtee.errors import FedteeError, Reason
from fedtee.ledger.receipts import SignedReceipt, check_receipt, verify_receipt

MEASUREMENT = bytes(range(48))


class FakeAttester:
    tee = TeeType.SIM
    report_data_size = 64

    def __init__(self, measurement: bytes = MEASUREMENT) -> None:
        self.measurement = measurement
        self.calls = 0

    def attest(self, report_data: bytes) -> Evidence:
        self.calls += 1
        return Evidence(tee=self.tee, data=report_data, aux={"measurement": self.measurement})


@dataclass
class FakeServer:
    rounds: int = 2
    allowed: bytes = MEASUREMENT
    chunk: int = 100
    drop_download_once_at: int | None = None  # byte offset where one stream breaks off
    unavailable_calls: int = 0  # the first N get_task calls fail as if the network dropped
    reattest_on_round: int | None = None
    federation_id: str = "fed-test"
    model: bytes = field(
        default_factory=lambda: tensors.encode(
            {"bias": np.zeros(10, np.float32), "weights": np.zeros((64, 10), np.float32)}
        )
    )
    nonces: dict[bytes, str] = field(default_factory=dict)
    keys: dict[str, bytes] = field(default_factory=dict)
    submitted: list[tuple[int, str]] = field(default_factory=list)
    round: int = 1
    enrolments: int = 0
    download_offsets: list[int] = field(default_factory=list)
    _reattest_sent: bool = False

    def get_challenge(self, *, client_id: str, tee: TeeType, aux: Mapping[str, bytes]) -> Challenge:
        nonce = os.urandom(32)
        self.nonces[nonce] = client_id
        return Challenge(nonce=nonce, expires_unix_ms=10**13, federation_id=self.federation_id)

    def enroll(
        self, *, client_id: str, nonce: bytes, public_key: bytes, evidence: Evidence
    ) -> Enrolment:
        if self.nonces.pop(nonce, None) != client_id:
            return Enrolment(accepted=False, reason=Reason.NONCE_UNKNOWN.value)
        try:
            check_report_data(found=evidence.data, nonce=nonce, public_key=public_key)
        except FedteeError as exc:
            return Enrolment(accepted=False, reason=exc.reason.value, message=exc.message)
        if evidence.aux.get("measurement") != self.allowed:
            return Enrolment(
                accepted=False,
                reason=Reason.MEASUREMENT_NOT_ALLOWED.value,
                message="measurement not in policy",
            )
        self.keys[client_id] = public_key
        self.enrolments += 1
        return Enrolment(
            accepted=True,
            credential=b"cred-" + client_id.encode(),
            credential_expires_unix_ms=10**13,
            attestation_result_json=json.dumps({"code_identity": self.allowed.hex()}),
        )

    def get_task(self, *, session: Session) -> Task:
        if self.unavailable_calls > 0:
            self.unavailable_calls -= 1
            raise ServerUnavailable("connection refused")
        if self.round > self.rounds:
            return Task(kind=TaskKind.FINISHED)
        if self.reattest_on_round == self.round and not self._reattest_sent:
            self._reattest_sent = True
            return Task(kind=TaskKind.REATTEST)
        return Task(
            kind=TaskKind.TRAIN,
            round=self.round,
            global_model_digest=tensors.digest(self.model),
            global_model_size=len(self.model),
            config={"local_epochs": "1"},
            federation_id=self.federation_id,
        )

    def download_model(
        self, *, session: Session, round: int, digest: bytes, offset: int
    ) -> Iterator[ModelChunk]:
        self.download_offsets.append(offset)
        for start in range(offset, len(self.model), self.chunk):
            if self.drop_download_once_at is not None and start >= self.drop_download_once_at:
                self.drop_download_once_at = None
                return  # the stream ends early, as a dropped connection does
            yield ModelChunk(
                data=self.model[start : start + self.chunk],
                offset=start,
                total_size=len(self.model),
            )

    def upload_status(self, *, session: Session, receipt_hash: bytes) -> UploadStatus:
        return UploadStatus(committed=0, size=0)  # this fake never keeps partial uploads

    def submit_update(
        self,
        *,
        session: Session,
        receipt: SignedReceipt,
        size: int,
        chunks: Iterable[bytes],
        encoding: str = "safetensors",
        offset: int = 0,
    ) -> SubmitOutcome:
        assert offset == 0 and encoding == "safetensors"
        data = b"".join(chunks)
        try:
            parsed = verify_receipt(receipt, self.keys[session.client_id])
            check_receipt(
                parsed,
                federation_id=self.federation_id,
                round=self.round,
                client_id=session.client_id,
                global_model_digest=tensors.digest(self.model),
                update_digest=tensors.digest(data),
                measurement=self.allowed,
            )
            tensors.decode(data)
        except FedteeError as exc:
            self.submitted.append((self.round, exc.reason.value))
            self.round += 1
            return SubmitOutcome(accepted=False, reason=exc.reason.value, message=exc.message)
        self.submitted.append((self.round, "accepted"))
        self.round += 1
        return SubmitOutcome(accepted=True)

    def close(self) -> None:
        pass


def fake_runtime(
    server: FakeServer,
    trainer: Any,
    *,
    chunk_bytes: int,
    on_event: Callable[[ClientEvent], None] | None = None,
) -> ClientRuntime:
    """A ClientRuntime against ``server`` with a fixed clock, no sleeping and seeded jitter."""
    return ClientRuntime(
        client_id="c1",
        transport=server,
        attester=FakeAttester(),
        trainer=trainer,
        measurement=MEASUREMENT,
        options=RuntimeOptions(chunk_bytes=chunk_bytes),
        sleep=lambda _s: None,
        clock_ms=lambda: 1_000,
        on_event=on_event,
        rng=random.Random(0),
    )
