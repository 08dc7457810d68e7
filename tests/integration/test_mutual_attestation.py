"""Mutual attestation over real loopback TLS gRPC: a client checks the aggregator's evidence
(real sim TEE, real verifier and policy engine) before it sends anything, and a server that
fails is refused with nothing sent to it. Hostile servers are real gRPC servers too: a man in
the middle with its own certificate from the federation CA, and a server replaying evidence.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
import numpy as np
import pytest

from fedtee.attest.attesters.sim import SimRoot
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.runtime import ClientEvent, ClientRuntime, RuntimeOptions
from fedtee.client.server_attestation import (
    PinnedServer,
    ServerAttestationFailed,
    ServerVerifier,
    pin_server,
)
from fedtee.client.trainer import EvalResult, FitResult
from fedtee.client.transport import ServerUnavailable
from fedtee.errors import Reason
from fedtee.server.app import NoCollateral
from fedtee.server.self_attestation import build_server_attester
from fedtee.wire import serde, tls
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb
from fedtee.wire._gen.fedtee.v1 import federation_pb2_grpc as pb_grpc

from .conftest import FED, GOOD, Harness

SERVER_CODE = bytes.fromhex("5e" * 48)
OTHER_CODE = bytes.fromhex("6f" * 48)


def server_policy(*measurements: bytes) -> Policy:
    refs = ", ".join(f'"{m.hex()}"' for m in measurements)
    return Policy.from_toml(
        "version = 1\n[tee.sim]\nallow_simulated = true\n"
        f"[tee.sim.reference]\nmeasurement = [{refs}]\n"
    )


class AddOne:
    def fit(self, arrays: dict[str, Any], config: dict[str, str]) -> FitResult:
        return FitResult(arrays={k: v + np.float32(1) for k, v in arrays.items()}, num_examples=5)

    def evaluate(self, arrays: dict[str, Any], config: dict[str, str]) -> EvalResult:
        return EvalResult(loss=0.0, num_examples=5)


@dataclass
class ServerTee:
    """The aggregator's sim TEE (its own sim root, not the clients')."""

    root: SimRoot = field(default_factory=SimRoot.generate)

    def attester(self, measurement: bytes = SERVER_CODE) -> Any:
        return build_server_attester("sim", measurement=measurement, sim_root=self.root)

    @property
    def trust(self) -> TrustAnchors:
        return TrustAnchors(roots={TeeType.SIM: (self.root.certificate,)})


@pytest.fixture
def tee() -> ServerTee:
    return ServerTee()


def connect(address: str, ca_pem: bytes) -> tuple[PinnedServer, GrpcTransport]:
    """What `fedtee client start` does with [server_attestation]: pin, then dial pinned."""
    pinned = pin_server(address, ca_pem=ca_pem, server_name="localhost")
    transport = GrpcTransport.connect(
        address=address, ca_pem=pinned.certificate_pem, server_name="localhost"
    )
    return pinned, transport


def verifier(
    h: Harness,
    *,
    trust: TrustAnchors,
    policy: Policy | None = None,
    require: bool = True,
    address: str | None = None,
) -> tuple[ServerVerifier, GrpcTransport]:
    assert h.server is not None and h.ca is not None
    pinned, transport = connect(address or f"127.0.0.1:{h.server.port}", h.ca.cert_pem)
    check = ServerVerifier(
        source=transport,
        pinned=pinned,
        policy=policy or server_policy(SERVER_CODE),
        trust=trust,
        collateral=NoCollateral(),
        require=require,
    )
    return check, transport


def run_client(
    h: Harness, check: ServerVerifier, transport: GrpcTransport, events: list[ClientEvent]
) -> Any:
    runtime = ClientRuntime(
        client_id="c1",
        transport=transport,
        attester=h.att.attester(measurement=GOOD, platform=b""),
        trainer=AddOne(),
        measurement=GOOD,
        options=RuntimeOptions(max_wait_s=0.1, max_reconnect_attempts=2, backoff_initial_s=0.01),
        on_event=events.append,
        server_check=check,
    )
    try:
        return runtime.run()
    finally:
        transport.close()


def assert_server_got_nothing(h: Harness) -> None:
    store = h.server.store if h.server is not None else None
    assert store is not None
    assert store.list_clients(FED) == []
    assert store.updates(FED, 1, accepted_only=False) == []


# --- (a) an attested server is accepted -------------------------------------------------------


def test_client_trains_only_after_verifying_a_sim_attested_server(
    harness: Harness, tee: ServerTee
) -> None:
    harness.start(attester=tee.attester(), rounds=1, clients_per_round=1)
    check, transport = verifier(harness, trust=tee.trust)
    events: list[ClientEvent] = []

    summary = run_client(harness, check, transport, events)

    assert summary.finished and summary.accepted == 1
    kinds = [e.kind for e in events]
    assert kinds.index("server_attested") < kinds.index("enrolled")
    result = check.last_result
    assert result is not None and result.tee is TeeType.SIM and not result.hardware_backed
    assert result.code_identity == SERVER_CODE
    assert result.status.value == "warning"  # simulated evidence is never plain affirming


def test_a_server_without_a_tee_is_accepted_only_when_not_required(harness: Harness) -> None:
    harness.start(rounds=1, clients_per_round=1)
    anchors = ServerTee().trust
    check, transport = verifier(harness, trust=anchors, require=False)
    events: list[ClientEvent] = []
    summary = run_client(harness, check, transport, events)
    assert summary.accepted == 1
    assert "server_unattested" in [e.kind for e in events]

    required, transport = verifier(harness, trust=anchors, require=True)
    try:
        with pytest.raises(ServerAttestationFailed) as err:
            required.check()
    finally:
        transport.close()
    assert err.value.reason is Reason.SERVER_NOT_ATTESTED


# --- (b) servers that fail are refused and get nothing ----------------------------------------


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong_root", Reason.CHAIN_UNTRUSTED_ROOT),
        ("measurement", Reason.MEASUREMENT_NOT_ALLOWED),
        ("no_sim_in_policy", Reason.TEE_NOT_ALLOWED),
    ],
)
def test_a_server_that_fails_attestation_receives_nothing(
    harness: Harness, tee: ServerTee, case: str, reason: Reason
) -> None:
    harness.start(attester=tee.attester(SERVER_CODE), rounds=1, clients_per_round=1)
    trust, policy = tee.trust, server_policy(SERVER_CODE)
    if case == "wrong_root":
        trust = ServerTee().trust  # the client trusts another sim root
    elif case == "measurement":
        policy = server_policy(OTHER_CODE)
    else:
        policy = Policy.from_toml('version = 1\n[tee.tpm]\n[tee.tpm.reference]\npcr23 = ["00"]\n')
    check, transport = verifier(harness, trust=trust, policy=policy)
    events: list[ClientEvent] = []

    with pytest.raises(ServerAttestationFailed) as err:
        run_client(harness, check, transport, events)

    assert err.value.reason is reason
    assert [e.kind for e in events] == ["server_refused"]
    assert events[0].reason == reason.value
    assert_server_got_nothing(harness)


class Relay(pb_grpc.FederationServicer):
    """A hostile server: relays GetServerEvidence to the genuine server and counts every
    other call it receives (it answers them UNAVAILABLE)."""

    def __init__(self, upstream: GrpcTransport, *, claim_key: bytes | None, replay: bool) -> None:
        self.upstream = upstream
        self.claim_key = claim_key
        self.replay = replay
        self.first: pb.ServerEvidence | None = None
        self.other_calls: list[str] = []
        self.lock = threading.Lock()

    def GetServerEvidence(self, request: Any, context: Any) -> pb.ServerEvidence:
        with self.lock:
            if self.replay and self.first is not None:
                return self.first  # evidence made for an earlier client's nonce
            reply = self.upstream.get_server_evidence(nonce=request.nonce, aux=dict(request.aux))
            msg = serde.server_evidence_to_proto(reply)
            if self.claim_key is not None:
                msg.public_key = self.claim_key
            self.first = msg
            return msg

    def _count(self, name: str, context: Any) -> Any:
        self.other_calls.append(name)
        context.abort(grpc.StatusCode.UNAVAILABLE, "relay")

    def GetChallenge(self, request: Any, context: Any) -> Any:
        return self._count("GetChallenge", context)

    def Enroll(self, request: Any, context: Any) -> Any:
        return self._count("Enroll", context)

    def GetTask(self, request: Any, context: Any) -> Any:
        return self._count("GetTask", context)


@pytest.fixture
def relay_server() -> Iterator[Any]:
    servers: list[grpc.Server] = []

    def start(relay: Relay, cert: tls.CertAndKey) -> int:
        server = grpc.server(ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_FederationServicer_to_server(relay, server)  # type: ignore[no-untyped-call]
        port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([(cert.key_pem, cert.cert_pem)])
        )
        server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(0).wait(5)


@pytest.mark.parametrize(
    ("rewrite_key", "reason"),
    [(False, Reason.KEY_NOT_BOUND), (True, Reason.REPORT_DATA_MISMATCH)],
)
def test_a_man_in_the_middle_relaying_genuine_evidence_is_refused(
    harness: Harness, tee: ServerTee, relay_server: Any, rewrite_key: bool, reason: Reason
) -> None:
    # The MITM holds a certificate from the same federation CA, so TLS alone accepts it; the
    # evidence it relays is genuine but bound to the real server's TLS key, not the MITM's.
    server = harness.start(attester=tee.attester(), rounds=1, clients_per_round=1)
    assert harness.ca is not None
    mitm_cert = tls.make_server_cert(harness.ca, now=datetime.now(UTC))
    _, upstream = connect(f"127.0.0.1:{server.port}", harness.ca.cert_pem)
    mitm_key = tls.server_public_key_der(mitm_cert.cert_pem)
    relay = Relay(upstream, claim_key=mitm_key if rewrite_key else None, replay=False)
    port = relay_server(relay, mitm_cert)
    check, transport = verifier(harness, trust=tee.trust, address=f"127.0.0.1:{port}")
    events: list[ClientEvent] = []
    try:
        with pytest.raises(ServerAttestationFailed) as err:
            run_client(harness, check, transport, events)
    finally:
        upstream.close()
    assert err.value.reason is reason
    assert relay.other_calls == []  # no challenge, no evidence, no update reached the MITM
    assert_server_got_nothing(harness)


def test_replayed_server_evidence_is_refused(
    harness: Harness, tee: ServerTee, relay_server: Any
) -> None:
    # A process holding the genuine server's TLS key, but answering every client with the
    # evidence it obtained once: the first client's check passes, the next one's nonce is not
    # in the replayed evidence.
    server = harness.start(attester=tee.attester(), rounds=1, clients_per_round=1)
    assert harness.ca is not None
    _, upstream = connect(f"127.0.0.1:{server.port}", harness.ca.cert_pem)
    tls_material = tls.CertAndKey(
        cert_pem=server.config.tls_cert_pem, key_pem=server.config.tls_key_pem
    )
    relay = Relay(upstream, claim_key=None, replay=True)
    port = relay_server(relay, tls_material)
    first, t1 = verifier(harness, trust=tee.trust, address=f"127.0.0.1:{port}")
    second, t2 = verifier(harness, trust=tee.trust, address=f"127.0.0.1:{port}")
    try:
        assert first.check() is not None
        with pytest.raises(ServerAttestationFailed) as err:
            second.check()
    finally:
        for t in (t1, t2, upstream):
            t.close()
    assert err.value.reason is Reason.REPORT_DATA_MISMATCH


def test_a_pinned_channel_refuses_another_certificate_of_the_same_ca(
    harness: Harness, tee: ServerTee, relay_server: Any
) -> None:
    # Why pinning closes the MITM gap: a channel pinned to the attested server's certificate
    # cannot be redirected to an endpoint with any other certificate, even one the CA signed.
    server = harness.start(attester=tee.attester(), rounds=1, clients_per_round=1)
    assert harness.ca is not None
    pinned, _ = connect(f"127.0.0.1:{server.port}", harness.ca.cert_pem)
    _.close()
    other = tls.make_server_cert(harness.ca, now=datetime.now(UTC))
    _, upstream = connect(f"127.0.0.1:{server.port}", harness.ca.cert_pem)
    port = relay_server(Relay(upstream, claim_key=None, replay=False), other)
    hijacked = GrpcTransport.connect(
        address=f"127.0.0.1:{port}", ca_pem=pinned.certificate_pem, server_name="localhost"
    )
    try:
        with pytest.raises(ServerUnavailable):
            hijacked.get_server_evidence(nonce=bytes(32), aux={})
    finally:
        hijacked.close()
        upstream.close()


def test_pin_server_refuses_a_certificate_from_another_ca(harness: Harness) -> None:
    server = harness.start(rounds=1, clients_per_round=1)
    stranger = tls.make_ca(name="another CA", now=datetime.now(UTC))
    with pytest.raises(ServerAttestationFailed) as err:
        pin_server(f"127.0.0.1:{server.port}", ca_pem=stranger.cert_pem, server_name="localhost")
    assert err.value.reason is Reason.CHAIN_UNTRUSTED_ROOT


def test_server_evidence_is_rate_limited_with_a_reason(harness: Harness, tee: ServerTee) -> None:
    # One evidence per 100 s (burst 1): the second request is refused, whatever the timing.
    server = harness.start(
        attester=tee.attester(), rounds=1, clients_per_round=1, server_evidence_per_s=0.01
    )
    assert harness.ca is not None
    pinned, transport = connect(f"127.0.0.1:{server.port}", harness.ca.cert_pem)
    check = ServerVerifier(
        source=transport,
        pinned=pinned,
        policy=server_policy(SERVER_CODE),
        trust=tee.trust,
        collateral=NoCollateral(),
    )
    stub = pb_grpc.FederationStub(transport._channel)  # type: ignore[no-untyped-call]
    try:
        stub.GetServerEvidence(pb.ServerEvidenceRequest(nonce=bytes(32)), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            stub.GetServerEvidence(pb.ServerEvidenceRequest(nonce=bytes(32)), timeout=10)
        # The client's check reads "busy" as "retry later", not as a refusal.
        with pytest.raises(ServerUnavailable):
            check.check()
    finally:
        transport.close()
    assert err.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(err.value.trailing_metadata())["fedtee-reason"] == "device_busy"
