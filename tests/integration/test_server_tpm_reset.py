"""A TPM reset between enrolments, through the real server: a real swtpm is power-cycled
(``Swtpm.restart()``: TPM2_Startup(CLEAR) bumps resetCount) between two enrolments of the
same client, and the gate refuses the second with tpm_reset; the recovery paths let it back
(``fedtee server forget-client``, or the policy's ``[tee.tpm] on_reset = "reenrol"``), each
saying so in the ledger."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from fedtee import identity
from fedtee.attest.binding import report_data
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.attest.testing.tpm import Swtpm, swtpm_missing
from fedtee.cli.main import main as fedtee_main
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.transport import Enrolment
from fedtee.errors import Reason

from .conftest import FED, Harness

_WHY = swtpm_missing()
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(_WHY is not None, reason=f"swtpm path unavailable: {_WHY}"),
]

CODE = b"\x11" * 48
CLIENT = "tpm-1"


@pytest.fixture
def tpm() -> Iterator[Swtpm]:
    """A TPM of this test's own: it gets power-cycled."""
    with tempfile.TemporaryDirectory(prefix="fedtee-ekca-") as ca_dir:
        t = Swtpm.provision(ca_dir=Path(ca_dir))
        try:
            yield t.start()
        finally:
            t.close()


def _serve(harness: Harness, tpm: Swtpm, *, on_reset: str | None = None) -> GrpcTransport:
    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

    with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
        ek = x509.load_der_x509_certificate(client.challenge_request()["ek_cert"])
    # Verify inside the EK certificate's validity, whatever today's date.
    harness.clock.offset = ek.not_valid_before_utc + timedelta(days=1) - datetime.now(UTC)
    policy = Policy.from_toml(
        'version = 1\n[tee.tpm]\naccepted_tcb = ["NotApplicable"]\n'
        + (f'on_reset = "{on_reset}"\n' if on_reset else "")
        + f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(CODE).hex()}"]\n'
    )
    server = harness.start(policy=policy, trust=TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)}))
    assert harness.ca is not None
    return GrpcTransport.connect(
        address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
    )


def _enrol(transport: GrpcTransport, tpm: Swtpm) -> Enrolment:
    """One enrolment as the client runtime does it: fresh key, challenge, activation, quote.
    The attester is opened afresh each time, as a client process started after a reboot is."""
    from fedtee.attest.attesters.tpm import TpmAttester

    with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
        key = identity.public_key_der(identity.generate())
        ch = transport.get_challenge(
            client_id=CLIENT, tee=TeeType.TPM, aux=client.challenge_request()
        )
        client.activate(ch.aux)
        client.extend_code_pcr(CODE)
        evidence = client.attest(report_data(nonce=ch.nonce, public_key=key, size=32))
    return transport.enroll(client_id=CLIENT, nonce=ch.nonce, public_key=key, evidence=evidence)


def _warnings(outcome: Enrolment) -> list[str]:
    result: dict[str, Any] = json.loads(outcome.attestation_result_json)
    return [str(w) for w in result["warnings"]]


def _ledger(harness: Harness, kind: str) -> list[dict[str, Any]]:
    lines = (harness.tmp / "state" / "ledger.jsonl").read_bytes().splitlines()
    return [e["body"] for e in map(json.loads, lines) if e["kind"] == kind]


def _server_toml(harness: Harness) -> Path:
    """The server.toml an operator would point forget-client at (only state_dir is used)."""
    path = harness.tmp / "server.toml"
    path.write_text(
        f'[federation]\nid = "{FED}"\ninitial_model = "model.safetensors"\n'
        '[server]\naddress = "127.0.0.1:0"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
        'state_dir = "state"\n[attestation]\npolicy = "policy.toml"\n'
    )
    return path


def test_a_tpm_reset_between_enrolments_is_refused_until_an_operator_forgets_the_client(
    harness: Harness, tpm: Swtpm, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = _serve(harness, tpm)
    try:
        first = _enrol(transport, tpm)
        same_cycle = _enrol(transport, tpm)  # credential renewal, same power cycle
        tpm.restart()  # the device reboots
        after_reset = _enrol(transport, tpm)
        again = _enrol(transport, tpm)  # still refused: nothing changed
        assert fedtee_main(["server", "forget-client", CLIENT, "--config",
                            str(_server_toml(harness))]) == 0  # fmt: skip
        recovered = _enrol(transport, tpm)
        settled = _enrol(transport, tpm)
    finally:
        transport.close()

    assert first.accepted and same_cycle.accepted, (first, same_cycle)
    assert not any(w.startswith("tpm_") for w in _warnings(same_cycle))
    for refused in (after_reset, again):
        assert not refused.accepted
        assert refused.reason == Reason.TPM_RESET.value
        assert "rebooted or its TPM was reset" in refused.message
        assert "forget-client" in refused.message
    assert harness.server is not None and harness.server.store is not None
    store = harness.server.store
    assert [r.reason for r in store.rejections(FED)] == [Reason.TPM_RESET, Reason.TPM_RESET]
    client = store.get_client(CLIENT)
    assert client is not None and not client.quarantined  # a reboot is not misbehaviour
    assert [r["reason"] for r in _ledger(harness, "rejection")] == ["tpm_reset", "tpm_reset"]
    assert "cleared the TPM counters" in capsys.readouterr().out

    assert recovered.accepted, recovered
    assert any(w.startswith("tpm_counters_cleared") for w in _warnings(recovered))
    assert settled.accepted and not any(w.startswith("tpm_") for w in _warnings(settled))
    enrolments = _ledger(harness, "enrolment")
    assert len(enrolments) == 4  # first, same_cycle, recovered, settled
    assert "tpm_counters_cleared" in enrolments[2]["attestation"]
    counters = store.tpm_counters(CLIENT)
    assert counters is not None and counters.cleared_ms is None


def test_on_reset_reenrol_admits_a_rebooted_tpm_and_notes_it_in_the_ledger(
    harness: Harness, tpm: Swtpm
) -> None:
    transport = _serve(harness, tpm, on_reset="reenrol")
    try:
        first = _enrol(transport, tpm)
        tpm.restart()
        after_reset = _enrol(transport, tpm)
    finally:
        transport.close()
    assert first.accepted, first
    assert after_reset.accepted, after_reset
    noted = [w for w in _warnings(after_reset) if w.startswith("tpm_reset")]
    assert noted and "reenrol" in noted[0]
    assert "tpm_reset" in _ledger(harness, "enrolment")[1]["attestation"]
    assert harness.server is not None and harness.server.store is not None
    assert harness.server.store.rejections(FED) == []


def test_forget_client_without_stored_counters_changes_nothing(
    harness: Harness, tpm: Swtpm, capsys: pytest.CaptureFixture[str]
) -> None:
    transport = _serve(harness, tpm)
    transport.close()
    config = str(_server_toml(harness))
    assert fedtee_main(["server", "forget-client", "nobody", "--config", config]) == 1
    assert "no stored TPM counters" in capsys.readouterr().out
