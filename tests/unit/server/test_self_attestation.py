"""The aggregator's own evidence (fedtee.server.self_attestation): binding, bounds, errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedtee.attest.attesters.sim import SimRoot
from fedtee.attest.binding import SERVER_DOMAIN_TAG, report_data
from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.policy import Policy, evaluate
from fedtee.errors import ConfigError, DeviceError, FedteeError, ProtocolError, Reason
from fedtee.server.app import NoCollateral
from fedtee.server.self_attestation import ServerAttestation, build_server_attester, measure_server
from fedtee.wire.messages import ServerEvidenceRequest

NONCE = bytes(range(32))
TLS_KEY = b"\x30\x59" + b"server-tls-key" * 6
CODE = bytes.fromhex("c0" * 48)


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class Recording:
    """An attester seam: records what it was asked for."""

    tee = TeeType.SIM
    report_data_size = 64

    def __init__(self, fail: Exception | None = None) -> None:
        self.seen: list[bytes] = []
        self.activated: list[Mapping[str, bytes]] = []
        self.fail = fail

    def attest(self, report_data: bytes) -> Evidence:
        if self.fail is not None:
            raise self.fail
        self.seen.append(report_data)
        return Evidence(TeeType.SIM, b"x")


class RecordingWithChallenge(Recording):
    def challenge_request(self) -> dict[str, bytes]:
        return {"ak_public": b"ak"}

    def activate(self, to_client: Mapping[str, bytes]) -> bytes:
        self.activated.append(dict(to_client))
        return b"secret"

    def attest(self, report_data: bytes) -> Evidence:
        self.seen.append(report_data)
        return Evidence(
            TeeType.SIM, b"x", {"activated_secret": b"secret"} if self.activated else {}
        )


def test_real_sim_evidence_binds_nonce_and_tls_key_in_the_server_domain() -> None:
    root = SimRoot.generate()
    server = ServerAttestation(
        attester=build_server_attester("sim", measurement=CODE, sim_root=root),
        tls_public_key=TLS_KEY,
    )
    reply = server.evidence(ServerEvidenceRequest(nonce=NONCE))
    assert reply.public_key == TLS_KEY and reply.challenge_request == {}
    policy = Policy.from_toml(
        "version = 1\n[tee.sim]\nallow_simulated = true\n"
        f'[tee.sim.reference]\nmeasurement = ["{CODE.hex()}"]\n'
    )
    common = {
        "policy": policy,
        "trust": TrustAnchors(roots={TeeType.SIM: (root.certificate,)}),
        "collateral": NoCollateral(),
        "now": datetime.now(UTC),
        "nonce": NONCE,
        "public_key": TLS_KEY,
    }
    ok = evaluate(reply.evidence, domain=SERVER_DOMAIN_TAG, **common)  # type: ignore[arg-type]
    assert ok.result.accepted and ok.result.code_identity == CODE
    # The same evidence checked as a client's enrolment evidence does not bind.
    as_client = evaluate(reply.evidence, **common)  # type: ignore[arg-type]
    assert as_client.result.first_reason is Reason.REPORT_DATA_MISMATCH


def test_report_data_passed_to_the_attester() -> None:
    attester = Recording()
    ServerAttestation(attester=attester, tls_public_key=TLS_KEY).evidence(
        ServerEvidenceRequest(nonce=NONCE)
    )
    assert attester.seen == [
        report_data(nonce=NONCE, public_key=TLS_KEY, size=64, domain=SERVER_DOMAIN_TAG)
    ]


def test_rate_limit_refuses_with_device_busy_then_recovers() -> None:
    clock = FakeClock()
    server = ServerAttestation(
        attester=Recording(), tls_public_key=TLS_KEY, max_per_s=2.0, clock=clock
    )
    req = ServerEvidenceRequest(nonce=NONCE)
    server.evidence(req)
    server.evidence(req)
    with pytest.raises(ProtocolError) as err:
        server.evidence(req)
    assert err.value.reason is Reason.DEVICE_BUSY
    clock.t += 0.5  # one more token
    server.evidence(req)


def test_challenge_answer_goes_to_activate_and_the_request_is_returned() -> None:
    attester = RecordingWithChallenge()
    server = ServerAttestation(attester=attester, tls_public_key=TLS_KEY)
    first = server.evidence(ServerEvidenceRequest(nonce=NONCE))
    assert first.challenge_request == {"ak_public": b"ak"} and attester.activated == []
    second = server.evidence(ServerEvidenceRequest(nonce=NONCE, aux={"credential_blob": b"c"}))
    assert attester.activated == [{"credential_blob": b"c"}]
    assert second.evidence.aux["activated_secret"] == b"secret"
    # Another client's first request never sees that answer.
    assert (
        "activated_secret" not in server.evidence(ServerEvidenceRequest(nonce=NONCE)).evidence.aux
    )


def test_challenge_answer_to_an_attester_without_one_is_malformed() -> None:
    server = ServerAttestation(attester=Recording(), tls_public_key=TLS_KEY)
    with pytest.raises(ProtocolError) as err:
        server.evidence(ServerEvidenceRequest(nonce=NONCE, aux={"credential_blob": b"c"}))
    assert err.value.reason is Reason.MESSAGE_MALFORMED


@pytest.mark.parametrize(
    ("fail", "reason"),
    [
        (RuntimeError("tss exploded"), Reason.DEVICE_FAILED),
        (DeviceError("gone", reason=Reason.DEVICE_ABSENT), Reason.DEVICE_ABSENT),
    ],
)
def test_attester_failures_are_typed(fail: Exception, reason: Reason) -> None:
    server = ServerAttestation(attester=Recording(fail=fail), tls_public_key=TLS_KEY)
    with pytest.raises(FedteeError) as err:
        server.evidence(ServerEvidenceRequest(nonce=NONCE))
    assert err.value.reason is reason


def test_sim_server_attester_needs_a_root() -> None:
    with pytest.raises(ConfigError):
        build_server_attester("sim", measurement=CODE)


def test_server_measurement_covers_every_python_file(tmp_path: Path) -> None:
    pkg = tmp_path / "fedtee"
    (pkg / "server").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "server" / "app.py").write_text("x = 1\n")
    before = measure_server(pkg)
    assert len(before) == 48 and measure_server(pkg) == before
    (pkg / "server" / "app.py").write_text("x = 2\n")
    assert measure_server(pkg) != before
    assert len(measure_server()) == 48  # the installed package
