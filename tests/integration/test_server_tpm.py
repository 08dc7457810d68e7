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
def ca_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fedtee-ekca-") as d:
        yield Path(d)


def _running(ca_dir: Path) -> Iterator[Swtpm]:
    t = Swtpm.provision(ca_dir=ca_dir)
    try:
        yield t.start()
    finally:
        t.close()


@pytest.fixture(scope="module")
def tpm(ca_dir: Path) -> Iterator[Swtpm]:
    yield from _running(ca_dir)


@pytest.fixture(scope="module")
def tpm_b(ca_dir: Path) -> Iterator[Swtpm]:
    """A second TPM certified by the same EK CA (so both are trusted)."""
    yield from _running(ca_dir)


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


def _serve_trusting(harness: Harness, tpm: Swtpm, ek_cert: bytes) -> GrpcTransport:
    """A server whose policy admits CODE on TPMs certified by ``tpm``'s EK CA."""
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

    ek = x509.load_der_x509_certificate(ek_cert)
    harness.clock.offset = ek.not_valid_before_utc + timedelta(days=1) - datetime.now(UTC)
    policy = Policy.from_toml(
        'version = 1\n[tee.tpm]\naccepted_tcb = ["NotApplicable"]\n'
        f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(CODE).hex()}"]\n'
    )
    server = harness.start(policy=policy, trust=TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)}))
    assert harness.ca is not None
    return GrpcTransport.connect(
        address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
    )


def test_a_quote_made_by_another_tpm_is_refused_by_the_server(
    harness: Harness, tpm: Swtpm, tpm_b: Swtpm
) -> None:
    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.attest.model import Evidence

    with (
        TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as a,
        TpmAttester(tcti=tpm_b.tcti, ek_chain=tpm_b.ca_issuer_pem()) as b,
    ):
        transport = _serve_trusting(harness, tpm, a.challenge_request()["ek_cert"])
        try:
            key = identity.public_key_der(identity.generate())
            ch = transport.get_challenge(
                client_id="tpm-a", tee=TeeType.TPM, aux=a.challenge_request()
            )
            secret = a.activate(ch.aux)  # TPM A proves its AK is bound to its EK...
            b.extend_code_pcr(CODE)  # ...but the quote comes from TPM B (also certified)
            quote = b.attest(report_data(nonce=ch.nonce, public_key=key, size=32))
            forged = Evidence(tee=quote.tee, data=quote.data,
                              aux={**quote.aux, "activated_secret": secret})  # fmt: skip
            outcome = transport.enroll(client_id="tpm-a", nonce=ch.nonce, public_key=key,
                                       evidence=forged)  # fmt: skip
        finally:
            transport.close()
    assert not outcome.accepted
    assert outcome.reason == Reason.AK_NOT_BOUND.value
    assert harness.server is not None and harness.server.store is not None
    assert [r.reason for r in harness.server.store.rejections("fed-it")] == [Reason.AK_NOT_BOUND]


def test_an_ak_not_bound_to_the_ek_is_refused_by_the_server(
    harness: Harness, tpm: Swtpm, tpm_b: Swtpm
) -> None:
    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.errors import DeviceError

    with (
        TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as a,
        TpmAttester(tcti=tpm_b.tcti, ek_chain=tpm_b.ca_issuer_pem()) as b,
    ):
        transport = _serve_trusting(harness, tpm, a.challenge_request()["ek_cert"])
        try:
            key = identity.public_key_der(identity.generate())
            # A's (certified) EK presented with B's AK: the credential is made for B's AK
            # under A's EK, so neither TPM can release the secret.
            request = {**a.challenge_request(), "ak_public": b.ak_public}
            ch = transport.get_challenge(client_id="tpm-x", tee=TeeType.TPM, aux=request)
            for tpm_attester in (a, b):
                with pytest.raises(DeviceError):
                    tpm_attester.activate(ch.aux)
            b.extend_code_pcr(CODE)
            evidence = b.attest(report_data(nonce=ch.nonce, public_key=key, size=32))
            outcome = transport.enroll(client_id="tpm-x", nonce=ch.nonce, public_key=key,
                                       evidence=evidence)  # fmt: skip
        finally:
            transport.close()
    assert not outcome.accepted
    assert outcome.reason == Reason.AK_NOT_BOUND.value
