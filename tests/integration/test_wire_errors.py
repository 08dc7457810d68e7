"""Every failure leaves the server with a gRPC status and its stable reason in the trailer."""

from __future__ import annotations

import grpc
import pytest

from fedtee import identity, tensors
from fedtee.errors import Reason
from fedtee.ledger.receipts import Receipt, sign_receipt
from fedtee.server.service import reason_of
from fedtee.wire import auth
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc
from fedtee.wire.limits import DEFAULT_LIMITS

from .conftest import Harness

SERVICE = "/fedtee.v1.Federation/"


def _stub(h: Harness) -> tuple[grpc.Channel, pb_grpc.FederationStub]:
    assert h.server is not None and h.ca is not None
    channel = grpc.secure_channel(
        f"127.0.0.1:{h.server.port}",
        grpc.ssl_channel_credentials(root_certificates=h.ca.cert_pem),
        options=[*DEFAULT_LIMITS.grpc_options(), ("grpc.ssl_target_name_override", "localhost")],
    )
    return channel, pb_grpc.FederationStub(channel)  # type: ignore[no-untyped-call]


def _md(key: identity.PrivateKey, credential: bytes, method: str) -> list[tuple[str, str | bytes]]:
    import time

    return list(
        auth.client_metadata(
            method=SERVICE + method,
            credential=credential,
            private_key=key,
            now_ms=int(time.time() * 1000),
        )
    )


def test_calls_without_or_with_a_bad_proof_are_unauthenticated(harness: Harness) -> None:
    harness.start()
    peer = harness.peer("a")
    assert peer.enroll().accepted
    assert peer.session is not None
    channel, stub = _stub(harness)
    try:
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetTask(pb.TaskRequest(client_id="a"), timeout=10)
        assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert reason_of(exc.value) == Reason.CREDENTIAL_MISSING.value

        cred = peer.session.credential
        for key, method, reason in (
            (identity.generate(), "GetTask", Reason.CREDENTIAL_INVALID),  # not the bound key
            (peer.key, "SubmitUpdate", Reason.CREDENTIAL_INVALID),  # proof made for another call
        ):
            with pytest.raises(grpc.RpcError) as exc:
                stub.GetTask(
                    pb.TaskRequest(client_id="a"), metadata=_md(key, cred, method), timeout=10
                )
            assert exc.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert reason_of(exc.value) == reason.value

        with pytest.raises(grpc.RpcError) as exc:
            stub.GetTask(
                pb.TaskRequest(client_id="someone-else"),
                metadata=_md(peer.key, cred, "GetTask"),
                timeout=10,
            )
        assert reason_of(exc.value) == Reason.CREDENTIAL_WRONG_CLIENT.value

        forged = cred[:-1] + bytes([cred[-1] ^ 1])
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetTask(
                pb.TaskRequest(client_id="a"), metadata=_md(peer.key, forged, "GetTask"), timeout=10
            )
        assert reason_of(exc.value) == Reason.CREDENTIAL_INVALID.value
    finally:
        channel.close()


def test_malformed_and_oversized_inputs(harness: Harness) -> None:
    harness.start()
    peer = harness.peer("a")
    assert peer.enroll().accepted
    assert peer.session is not None
    channel, stub = _stub(harness)
    try:
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetChallenge(pb.ChallengeRequest(client_id="", tee="sim"), timeout=10)
        assert exc.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert reason_of(exc.value) == Reason.MESSAGE_MALFORMED.value

        with pytest.raises(grpc.RpcError) as exc:
            stub.GetChallenge(pb.ChallengeRequest(client_id="a", tee="nope"), timeout=10)
        assert reason_of(exc.value) == Reason.EVIDENCE_TYPE_UNKNOWN.value

        resp = stub.Enroll(
            pb.EnrollRequest(client_id="a", nonce=b"n" * 32, public_key=b"k"), timeout=10
        )
        assert not resp.accepted and resp.reason == Reason.MESSAGE_MALFORMED.value

        big = pb.Evidence(tee="sim", data=b"x" * (DEFAULT_LIMITS.max_evidence_bytes + 1))
        resp = stub.Enroll(
            pb.EnrollRequest(client_id="a", nonce=b"n" * 32, public_key=b"k", evidence=big),
            timeout=10,
        )
        assert not resp.accepted and resp.reason == Reason.MESSAGE_TOO_LARGE.value

        with pytest.raises(grpc.RpcError) as exc:
            list(
                stub.DownloadModel(
                    pb.ModelRequest(round=1, digest=b"\0" * 32),
                    metadata=_md(peer.key, peer.session.credential, "DownloadModel"),
                    timeout=10,
                )
            )
        assert reason_of(exc.value) == Reason.MODEL_DIGEST_MISMATCH.value

        with pytest.raises(grpc.RpcError) as exc:
            stub.GetServerEvidence(pb.ServerEvidenceRequest(nonce=b"n" * 32), timeout=10)
        assert exc.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        channel.close()


def test_receipt_checks_run_before_the_data_is_read(harness: Harness) -> None:
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    peer = harness.peer("a")
    assert peer.enroll().accepted
    task = peer.wait_task()
    _, data = peer.make_update(task)
    base = dict(
        federation_id=task.federation_id,
        round=task.round,
        client_id="a",
        global_model_digest=task.global_model_digest,
        update_digest=tensors.digest(data),
        num_examples=5,
        measurement=peer.measurement,
    )
    # Not quarantining: a late client can send last round's receipt by mistake.
    late = Receipt(**{**base, "round": task.round + 1})  # type: ignore[arg-type]
    out = peer.submit(sign_receipt(late, peer.key), data)
    assert (out.accepted, out.reason) == (False, Reason.RECEIPT_ROUND_MISMATCH.value)
    # A receipt naming other code than the client enrolled with: rejected and quarantined.
    other_code = Receipt(**{**base, "measurement": b"\x07" * 48})  # type: ignore[arg-type]
    out = peer.submit(sign_receipt(other_code, peer.key), data)
    assert (out.accepted, out.reason) == (False, Reason.RECEIPT_MEASUREMENT_MISMATCH.value)
    store = server.store
    assert store is not None
    client = store.get_client("a")
    assert client is not None and client.quarantined
    assert client.quarantine_reason is Reason.RECEIPT_MEASUREMENT_MISMATCH
