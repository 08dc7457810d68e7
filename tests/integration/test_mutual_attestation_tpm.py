"""Mutual attestation with a real TPM: the aggregator quotes with a swtpm (code PCR extended
with its measurement, AK proven bound to the EK by credential activation), and a client
verifies the quote over loopback TLS gRPC before it trains."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.attest.testing.tpm import Swtpm, running_swtpm, swtpm_missing
from fedtee.client.server_attestation import ServerAttestationFailed
from fedtee.errors import Reason
from fedtee.server.self_attestation import build_server_attester

from .conftest import Harness
from .test_mutual_attestation import (
    OTHER_CODE,
    SERVER_CODE,
    ServerTee,
    assert_server_got_nothing,
    run_client,
    verifier,
)

_WHY = swtpm_missing()
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(_WHY is not None, reason=f"swtpm path unavailable: {_WHY}"),
]

if _WHY is None:
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value


def tpm_policy(measurement: bytes) -> Policy:
    value = code_pcr_value(measurement).hex()
    return Policy.from_toml(f'version = 1\n[tee.tpm.reference]\npcr{CODE_PCR} = ["{value}"]\n')


@pytest.fixture
def tpm() -> Iterator[Swtpm]:
    with running_swtpm() as t:
        yield t


@pytest.fixture
def tpm_server(harness: Harness, tpm: Swtpm) -> Iterator[TrustAnchors]:
    attester = build_server_attester(
        "tpm", measurement=SERVER_CODE, tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()
    )
    try:
        harness.start(attester=attester, rounds=1, clients_per_round=1)
        yield TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)})
        harness.stop()
    finally:
        attester.close()  # type: ignore[attr-defined]


def test_client_verifies_the_servers_tpm_quote_then_trains(
    harness: Harness, tpm_server: TrustAnchors
) -> None:
    check, transport = verifier(harness, trust=tpm_server, policy=tpm_policy(SERVER_CODE))
    summary = run_client(harness, check, transport, [])
    assert summary.finished and summary.accepted == 1
    result = check.last_result
    assert result is not None and result.tee is TeeType.TPM and result.hardware_backed
    assert result.code_identity == code_pcr_value(SERVER_CODE)
    assert result.claims["ek_verified"] is True


@pytest.mark.parametrize(
    ("case", "reason"),
    [("pcr", Reason.MEASUREMENT_NOT_ALLOWED), ("ek_ca", Reason.CHAIN_UNTRUSTED_ROOT)],
)
def test_client_refuses_a_tpm_server_that_fails(
    harness: Harness, tpm_server: TrustAnchors, case: str, reason: Reason
) -> None:
    trust, policy = tpm_server, tpm_policy(SERVER_CODE)
    if case == "pcr":
        policy = tpm_policy(OTHER_CODE)  # the server runs other code than the client expects
    else:
        trust = ServerTee().trust  # the client does not trust this TPM's EK CA
    check, transport = verifier(harness, trust=trust, policy=policy)
    with pytest.raises(ServerAttestationFailed) as err:
        run_client(harness, check, transport, [])
    assert err.value.reason is reason
    assert_server_got_nothing(harness)
