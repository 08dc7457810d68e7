"""A TPM client enrols through the real server: the gate runs the TPM challenge extension
(MakeCredential in GetChallenge, the activation check in Enroll) over loopback TLS gRPC."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from fedtee import identity
from fedtee.attest.binding import report_data
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.attest.testing.tpm import Swtpm, swtpm_missing
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.errors import ProtocolError, Reason

from .conftest import Harness

_WHY = swtpm_missing()
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(_WHY is not None, reason=f"swtpm path unavailable: {_WHY}"),
]

CODE = b"\x11" * 48
OTHER_CODE = b"\x22" * 48


@pytest.fixture(scope="module")
def tpm() -> Iterator[Swtpm]:
    with tempfile.TemporaryDirectory(prefix="fedtee-ekca-") as d:
        t = Swtpm.provision(ca_dir=Path(d))
        try:
            yield t.start()
        finally:
            t.close()


def test_tpm_client_enrols_through_the_server_and_changed_code_is_refused(
    harness: Harness, tpm: Swtpm
) -> None:
    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

    with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
        ek = x509.load_der_x509_certificate(client.challenge_request()["ek_cert"])
        # Verify inside the EK certificate's validity, whatever today's date.
        harness.clock.offset = ek.not_valid_before_utc + timedelta(days=1) - datetime.now(UTC)
        policy = Policy.from_toml(
            'version = 1\n[tee.tpm]\naccepted_tcb = ["UpToDate", "NotApplicable"]\n'
            f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(CODE).hex()}"]\n'
        )
        server = harness.start(
            policy=policy, trust=TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)})
        )
        assert harness.ca is not None
        transport = GrpcTransport.connect(
            address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
        )
        try:
            outcomes = []
            for client_id, code in (("tpm-1", CODE), ("tpm-1", OTHER_CODE)):
                key = identity.public_key_der(identity.generate())
                ch = transport.get_challenge(
                    client_id=client_id, tee=TeeType.TPM, aux=client.challenge_request()
                )
                assert ch.aux, "the TPM challenge carries MakeCredential blobs"
                client.activate(ch.aux)
                client.extend_code_pcr(code)
                evidence = client.attest(report_data(nonce=ch.nonce, public_key=key, size=32))
                outcomes.append(
                    transport.enroll(
                        client_id=client_id, nonce=ch.nonce, public_key=key, evidence=evidence
                    )
                )
        finally:
            transport.close()
    good, changed = outcomes
    assert good.accepted, good
    result = json.loads(good.attestation_result_json)
    assert (result["tee"], result["hardware_backed"]) == ("tpm", True)
    assert not changed.accepted
    assert changed.reason == Reason.MEASUREMENT_NOT_ALLOWED.value


def test_a_tpm_whose_ek_is_not_trusted_gets_no_challenge(harness: Harness, tpm: Swtpm) -> None:
    from fedtee.attest.attesters.tpm import TpmAttester

    with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
        ek = x509.load_der_x509_certificate(client.challenge_request()["ek_cert"])
        harness.clock.offset = ek.not_valid_before_utc + timedelta(days=1) - datetime.now(UTC)
        policy = Policy.from_toml('version = 1\n[tee.tpm]\naccepted_tcb = ["NotApplicable"]\n')
        server = harness.start(policy=policy, trust=TrustAnchors(roots={TeeType.SIM: ()}))
        assert harness.ca is not None
        transport = GrpcTransport.connect(
            address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
        )
        try:
            with pytest.raises(ProtocolError) as exc:
                transport.get_challenge(
                    client_id="tpm-x", tee=TeeType.TPM, aux=client.challenge_request()
                )
        finally:
            transport.close()
    assert exc.value.reason is Reason.CHAIN_UNTRUSTED_ROOT
    assert server.store is not None
    assert [r.reason for r in server.store.rejections("fed-it")] == [Reason.CHAIN_UNTRUSTED_ROOT]
