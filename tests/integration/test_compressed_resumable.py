"""Compressed updates and resumed uploads: the real runtime against the real server over
loopback TLS gRPC."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from fedtee import codec, tensors
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientRuntime, RuntimeOptions
from fedtee.client.transport import ModelChunk, ServerUnavailable, Session, SubmitOutcome
from fedtee.codec import Encoding
from fedtee.errors import Reason
from fedtee.ledger.log import verify_ledger
from fedtee.ledger.receipts import Receipt, SignedReceipt, sign_receipt
from fedtee.server.app import FederationServer
from fedtee.server.store import RoundStatus
from fedtee.wire.limits import DEFAULT_LIMITS

from . import conftest
from .conftest import FED, GOOD, Harness
from .test_runtime_against_server import AddTrainer


class CuttingTransport(GrpcTransport):
    """A transport seam: the first upload's connection is cut after ``cut_after`` chunks."""

    def __init__(
        self, *args: Any, cut_after: int, before_cut: Callable[[int], None], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.cut_after: int | None = cut_after
        self.before_cut = before_cut
        self.attempts: list[tuple[int, int]] = []  # (offset, bytes sent) per attempt

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
        cut, self.cut_after = self.cut_after, None
        sent = [0]

        def counted() -> Iterator[bytes]:
            for i, chunk in enumerate(chunks):
                if cut is not None and i == cut:
                    # Cut only once the server has stored what was sent (no race with
                    # gRPC's send buffer), then drop the connection.
                    self.before_cut(sent[0])
                    raise ConnectionResetError("cut by the test")
                sent[0] += len(chunk)
                yield chunk

        try:
            return super().submit_update(
                session=session,
                receipt=receipt,
                size=size,
                chunks=counted(),
                encoding=encoding,
                offset=offset,
            )
        except Exception as exc:
            if cut is None:
                raise
            raise ServerUnavailable(f"connection cut after {sent[0]} bytes") from exc
        finally:
            self.attempts.append((offset, sent[0]))


def _transport(harness: Harness, server: FederationServer) -> GrpcTransport:
    assert harness.ca is not None
    return GrpcTransport.connect(
        address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
    )


def _channel(harness: Harness, server: FederationServer) -> grpc.Channel:
    """A TLS channel to the server for the transports here that cut their own calls."""
    assert harness.ca is not None
    options: list[tuple[str, Any]] = list(DEFAULT_LIMITS.grpc_options())
    options.append(("grpc.ssl_target_name_override", "localhost"))
    return grpc.secure_channel(
        f"127.0.0.1:{server.port}",
        grpc.ssl_channel_credentials(root_certificates=harness.ca.cert_pem),
        options=options,
    )


def _cutting(harness: Harness, server: FederationServer, cut_after: int) -> CuttingTransport:
    channel = _channel(harness, server)
    tmp = server.paths.artifacts / ".tmp"

    def server_holds(sent: int) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(p.stat().st_size >= sent for p in tmp.glob("*.part")):
                return
            time.sleep(0.01)
        raise AssertionError(f"the server never stored {sent} bytes")

    return CuttingTransport(channel, cut_after=cut_after, before_cut=server_holds)


def _final_arrays(server: FederationServer, round: int) -> dict[str, Any]:
    store = server.store
    assert store is not None
    rnd = store.get_round(FED, round)
    assert rnd is not None and rnd.status is RoundStatus.COMPLETED
    assert rnd.output_model_digest is not None
    path = server.paths.artifacts / f"{rnd.output_model_digest.hex()}.safetensors"
    return tensors.decode(path.read_bytes())


@pytest.mark.parametrize(
    ("encoding", "fraction", "tolerance"),
    [
        (Encoding.F16, 1.0, 1e-3),
        (Encoding.INT8, 1.0, 0.75 / 127),
        (Encoding.TOPK_INT8, 1.0, 0.75 / 127),
        (Encoding.TOPK, 0.5, 0.0),
    ],
)
def test_a_compressed_update_is_accepted_and_aggregated(
    harness: Harness, encoding: Encoding, fraction: float, tolerance: float
) -> None:
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    transport = _transport(harness, server)
    try:
        runtime = ClientRuntime(
            client_id="iot",
            transport=transport,
            attester=harness.att.attester(measurement=GOOD, platform=b""),
            trainer=AddTrainer(0.75, 10),
            measurement=GOOD,
            options=RuntimeOptions(max_wait_s=0.1, encoding=encoding, topk_fraction=fraction),
        )
        summary = runtime.run()
    finally:
        transport.close()
    assert summary.finished and summary.accepted == 1, summary
    out = _final_arrays(server, 1)
    for name in ("w", "b"):
        if fraction == 1.0:
            np.testing.assert_allclose(out[name], 0.75, atol=tolerance)
        else:  # top half of each tensor sent exactly, the rest left at the global model
            changed = out[name] != 0
            assert changed.sum() == int(np.ceil(fraction * out[name].size))
            np.testing.assert_array_equal(out[name][changed], np.float32(0.75))
    # The ledger names the digest of the encoded bytes the client signed and sent.
    report = verify_ledger(server.paths.ledger.read_bytes(), server_public_key=None)
    assert [r.round for r in report.lineage] == [1]


def test_a_cut_upload_resumes_and_sends_only_the_rest(harness: Harness) -> None:
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    transport = _cutting(harness, server, cut_after=5)
    rounds = server.rounds
    assert rounds is not None

    def sleep_until_parked(_seconds: float) -> None:
        # The retry waits until the server has parked what arrived (the race a real client
        # could lose would only cost it a resend from 0).
        deadline = time.monotonic() + 10
        while len(rounds._uploads) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        runtime = ClientRuntime(
            client_id="flaky",
            transport=transport,
            attester=harness.att.attester(measurement=GOOD, platform=b""),
            trainer=AddTrainer(0.5, 10),
            measurement=GOOD,
            options=RuntimeOptions(max_wait_s=0.1, chunk_bytes=32, max_rounds=1),
            sleep=sleep_until_parked,
        )
        summary = runtime.run()
    finally:
        transport.close()
    assert summary.accepted == 1, summary
    (first_offset, first_sent), (resume_offset, resent) = transport.attempts
    store = server.store
    assert store is not None
    [update] = store.updates(FED, 1)
    assert update.client_id == "flaky"
    size = (server.paths.artifacts / f"{update.update_digest.hex()}.safetensors").stat().st_size
    assert first_offset == 0 and first_sent == 5 * 32 < size
    assert resume_offset == first_sent  # the server kept everything that had arrived
    assert resent == size - resume_offset  # and only the rest was sent again
    assert runtime.bytes_sent < 2 * size
    assert len(rounds._uploads) == 0
    np.testing.assert_allclose(_final_arrays(server, 1)["w"], 0.5)


def _signed(peer: Any, task: Any, data: bytes) -> SignedReceipt:
    receipt = Receipt(
        federation_id=task.federation_id,
        round=task.round,
        client_id=peer.client_id,
        global_model_digest=task.global_model_digest,
        update_digest=tensors.digest(data),
        num_examples=10,
        measurement=peer.measurement,
    )
    return sign_receipt(receipt, peer.key)


def test_the_server_refuses_signed_but_malformed_or_relabelled_encodings(harness: Harness) -> None:
    harness.start(rounds=1, clients_per_round=3, min_clients=3)
    peers = [harness.peer(name) for name in ("relabel", "badindex", "badoffset")]
    assert all(p.enroll().accepted for p in peers)
    tasks = [p.wait_task() for p in peers]
    model = tensors.decode(peers[0].download(tasks[0]))
    trained = {k: v + np.float32(0.25) for k, v in model.items()}

    def send(peer: Any, task: Any, data: bytes, **kw: Any) -> SubmitOutcome:
        assert peer.session is not None
        outcome: SubmitOutcome = peer.transport.submit_update(
            session=peer.session,
            receipt=_signed(peer, task, data),
            size=len(data),
            chunks=[data[kw.get("offset", 0) :]],
            **kw,
        )
        return outcome

    # int8 bytes (signed as such) announced as f16: the name in the header must match.
    int8 = codec.encode_update(trained, global_arrays=model, encoding=Encoding.INT8)
    out = send(peers[0], tasks[0], int8, encoding="f16")
    assert (out.accepted, out.reason) == (False, Reason.UPDATE_MALFORMED.value)

    # A validly signed top-k update whose index points past its tensor.
    bad = tensors.encode_pure(
        {
            "w#idx": np.array([0, 12], dtype=np.int32),
            "w#val": np.ones(2, dtype=np.float32),
            "b#idx": np.array([0], dtype=np.int32),
            "b#val": np.ones(1, dtype=np.float32),
        },
        metadata={codec.ENCODING_KEY: "topk"},
    )
    out = send(peers[1], tasks[1], bad, encoding="topk")
    assert (out.accepted, out.reason) == (False, Reason.UPDATE_MALFORMED.value)

    # Resuming an upload the server never held.
    out = send(peers[2], tasks[2], int8, encoding="int8", offset=64)
    assert (out.accepted, out.reason) == (False, Reason.UPLOAD_OFFSET_MISMATCH.value)
    out = send(peers[2], tasks[2], int8, encoding="int8")  # from 0 it is accepted
    assert out.accepted, out


class CutDownloadTransport(GrpcTransport):
    """A transport seam: the first model download is cut after one chunk."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[int, int]] = []  # (offset asked, bytes received) per stream
        self.cut = True

    def download_model(
        self, *, session: Session, round: int, digest: bytes, offset: int
    ) -> Iterator[ModelChunk]:
        received = 0
        stream = super().download_model(session=session, round=round, digest=digest, offset=offset)
        try:
            for chunk in stream:
                received += len(chunk.data)
                yield chunk
                if self.cut:
                    self.cut = False
                    raise ServerUnavailable("connection cut by the test")
        finally:
            stream.close()  # cancels the gRPC call
            self.requests.append((offset, received))


def test_a_cut_download_resumes_from_the_last_byte_received(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = {"w": np.zeros((4, 3), np.float32), "b": np.zeros((3,), np.float32)}
    big["pad"] = np.zeros(300_000, np.float32)  # 1.2 MB: two chunks of the server's 1 MiB
    monkeypatch.setattr(conftest, "initial_model", lambda: tensors.encode(big))
    server = harness.start(rounds=1, clients_per_round=1, min_clients=1)
    transport = CutDownloadTransport(_channel(harness, server))
    try:
        runtime = ClientRuntime(
            client_id="dl",
            transport=transport,
            attester=harness.att.attester(measurement=GOOD, platform=b""),
            trainer=AddTrainer(0.5, 10),
            measurement=GOOD,
            options=RuntimeOptions(max_wait_s=0.1, max_rounds=1),
            sleep=lambda _s: None,
        )
        summary = runtime.run()
    finally:
        transport.close()
    assert summary.accepted == 1, summary
    size = len(tensors.encode(big))
    (first_offset, first), (resume_offset, rest) = transport.requests
    assert first_offset == 0 and 0 < first < size
    assert resume_offset == first and first + rest == size  # nothing fetched twice
