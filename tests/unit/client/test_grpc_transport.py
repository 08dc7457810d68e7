"""The gRPC transport over real TLS on loopback, against the in-memory fake server wrapped in
a servicer that checks proof of possession with fedtee.wire.auth."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any

import grpc
import pytest

from fedtee import identity
from fedtee.client.cheats import TamperingTransport
from fedtee.client.examples.digits import DigitsTrainer
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientRuntime, RuntimeOptions
from fedtee.client.transport import ServerUnavailable, Session
from fedtee.errors import CredentialError, FedteeError, Reason
from fedtee.wire import auth, serde, tls
from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc

from ._fakes import MEASUREMENT, FakeAttester, FakeServer

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class _Servicer(pb_grpc.FederationServicer):  # type: ignore[misc]
    def __init__(self, fake: FakeServer) -> None:
        self.fake = fake
        self._dummy_key = identity.generate()
        self.calls: list[tuple[str, str]] = []  # (method, the client's address) per call

    def _session(self, context: Any, method: str) -> Session:
        try:
            presented = auth.read_metadata(context.invocation_metadata())
            client_id = presented.credential.removeprefix(b"cred-").decode()
            auth.verify_pop(
                presented,
                method="/fedtee.v1.Federation/" + method,
                public_key=self.fake.keys[client_id],
                now_ms=int(time.time() * 1000),
            )
        except (FedteeError, KeyError) as exc:
            reason = getattr(exc, "reason", Reason.CREDENTIAL_INVALID)
            context.set_trailing_metadata(((auth.REASON_KEY, reason.value),))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return Session(
            client_id=client_id, credential=b"", private_key=self._dummy_key, expires_unix_ms=0
        )

    def GetChallenge(self, request: Any, context: Any) -> Any:
        req = serde.challenge_request_from_proto(request)
        return serde.challenge_to_proto(
            self.fake.get_challenge(client_id=req.client_id, tee=req.tee, aux=req.aux)
        )

    def Enroll(self, request: Any, context: Any) -> Any:
        req = serde.enroll_request_from_proto(request)
        return serde.enrolment_to_proto(
            self.fake.enroll(
                client_id=req.client_id,
                nonce=req.nonce,
                public_key=req.public_key,
                evidence=req.evidence,
            )
        )

    def GetTask(self, request: Any, context: Any) -> Any:
        self.calls.append(("GetTask", context.peer()))
        return serde.task_to_proto(self.fake.get_task(session=self._session(context, "GetTask")))

    def DownloadModel(self, request: Any, context: Any) -> Iterator[Any]:
        session = self._session(context, "DownloadModel")
        req = serde.model_request_from_proto(request)
        for chunk in self.fake.download_model(
            session=session, round=req.round, digest=req.digest, offset=req.offset
        ):
            yield serde.model_chunk_to_proto(chunk)

    def SubmitUpdate(self, request_iterator: Any, context: Any) -> Any:
        session = self._session(context, "SubmitUpdate")
        self.calls.append(("SubmitUpdate", context.peer()))
        context.send_initial_metadata(((auth.UPLOAD_GO_KEY, auth.UPLOAD_GO),))  # as the server
        header = serde.update_header_from_proto(next(request_iterator))
        data = [serde.update_data_from_proto(m) for m in request_iterator]
        outcome = self.fake.submit_update(
            session=session, receipt=header.receipt, size=header.size, chunks=data
        )
        return serde.submit_outcome_to_proto(outcome)


# The servicer of the running `served` fixture: the calls it saw.
_SERVICERS: list[_Servicer] = []


@pytest.fixture()
def served() -> Iterator[tuple[FakeServer, int, bytes]]:
    ca = tls.make_ca(name="test CA", now=NOW)
    leaf = tls.make_server_cert(ca, now=NOW)
    fake = FakeServer(rounds=2, chunk=1000)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = _Servicer(fake)
    pb_grpc.add_FederationServicer_to_server(servicer, server)
    port = server.add_secure_port(
        "127.0.0.1:0", grpc.ssl_server_credentials([(leaf.key_pem, leaf.cert_pem)])
    )
    server.start()
    _SERVICERS.append(servicer)
    try:
        yield fake, port, ca.cert_pem
    finally:
        _SERVICERS.remove(servicer)
        server.stop(grace=None)


def _runtime(transport: Any) -> ClientRuntime:
    return ClientRuntime(
        client_id="c1",
        transport=transport,
        attester=FakeAttester(),
        trainer=DigitsTrainer(partition=0, num_partitions=3, seed=0),
        measurement=MEASUREMENT,
        options=RuntimeOptions(chunk_bytes=700, max_reconnect_attempts=2, backoff_initial_s=0),
        rng=random.Random(0),
    )


def test_runtime_over_tls_grpc_enrols_trains_and_finishes(
    served: tuple[FakeServer, int, bytes],
) -> None:
    fake, port, ca_pem = served
    transport = GrpcTransport.connect(address=f"localhost:{port}", ca_pem=ca_pem)
    try:
        summary = _runtime(transport).run()
    finally:
        transport.close()
    assert summary.finished and summary.accepted == 2
    assert fake.submitted == [(1, "accepted"), (2, "accepted")]
    # After each upload the client opened a fresh connection (a new client port): the
    # server does not keep a read buffer its upload grew for an idle client.
    calls = _SERVICERS[-1].calls
    uploads = [k for k, (method, _) in enumerate(calls) if method == "SubmitUpdate"]
    assert len(uploads) == 2
    for k in uploads:
        before, after = calls[k][1], calls[k + 1][1]
        assert calls[k - 1][1] == before  # the same connection up to the upload
        assert after != before, calls


def test_tampered_update_over_grpc_is_rejected_with_its_reason(
    served: tuple[FakeServer, int, bytes],
) -> None:
    fake, port, ca_pem = served
    assert fake.submitted == []
    transport = TamperingTransport(
        GrpcTransport.connect(address=f"127.0.0.1:{port}", ca_pem=ca_pem)
    )
    try:
        summary = _runtime(transport).run()
    finally:
        transport.close()
    assert summary.rejected == [(1, "update_digest_mismatch"), (2, "update_digest_mismatch")]
    assert fake.submitted == summary.rejected


def test_a_call_with_a_proof_by_another_key_is_unauthenticated(
    served: tuple[FakeServer, int, bytes],
) -> None:
    _, port, ca_pem = served
    transport = GrpcTransport.connect(address=f"127.0.0.1:{port}", ca_pem=ca_pem)
    try:
        session = _runtime(transport).enroll()
        stolen = Session(
            client_id=session.client_id,
            credential=session.credential,
            private_key=identity.generate(),  # the credential without its key
            expires_unix_ms=session.expires_unix_ms,
        )
        with pytest.raises(CredentialError) as info:
            transport.get_task(session=stolen)
        assert info.value.reason is Reason.CREDENTIAL_INVALID
        assert transport.get_task(session=session).round == 1
    finally:
        transport.close()


def test_a_server_certificate_from_another_ca_is_refused(
    served: tuple[FakeServer, int, bytes],
) -> None:
    _, port, _ = served
    other = tls.make_ca(name="other CA", now=NOW)
    transport = GrpcTransport.connect(address=f"127.0.0.1:{port}", ca_pem=other.cert_pem)
    try:
        with pytest.raises(ServerUnavailable):
            _runtime(transport).enroll()
    finally:
        transport.close()
