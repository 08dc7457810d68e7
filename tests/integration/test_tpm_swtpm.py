"""TPM 2.0 end to end with a real software TPM (swtpm) and tpm2-pytss.

Each TPM is provisioned by swtpm_setup in a temporary directory with its own local CA
(never the system-wide one) and served on a free loopback port. The server side is pure:
TpmChallenge.prepare (MakeCredential) -> the TPM activates -> quote -> TpmVerifier ->
TpmChallenge.check.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from fedtee.attest.binding import check_report_data, report_data
from fedtee.attest.model import Evidence, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.testing.tpm import FakeEkCa, Swtpm, swtpm_missing
from fedtee.errors import (
    AttestationError,
    CollateralError,
    DeviceError,
    Reason,
    VerificationError,
)

_WHY = swtpm_missing()
pytestmark = [
    pytest.mark.swtpm,
    pytest.mark.skipif(_WHY is not None, reason=f"swtpm path unavailable: {_WHY}"),
]

if _WHY is None:
    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.attest.verify.tpm import (
        CODE_PCR,
        TpmChallenge,
        TpmVerifier,
        check_counters,
        code_pcr_value,
    )

NONCE = bytes(range(16, 48))
CLIENT_KEY = b"\x30\x59" + b"client-identity-key" * 4
CODE = b"\x11" * 48
OTHER_CODE = b"\x22" * 48


class NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(f"{kind}/{key}", reason=Reason.COLLATERAL_MISSING)


@pytest.fixture(scope="module")
def ca_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fedtee-ekca-") as d:
        yield Path(d)


def _tpm(ca_dir: Path) -> Iterator[Swtpm]:
    tpm = Swtpm.provision(ca_dir=ca_dir)
    try:
        yield tpm.start()
    finally:
        tpm.close()


@pytest.fixture(scope="module")
def tpm_a(ca_dir: Path) -> Iterator[Swtpm]:
    yield from _tpm(ca_dir)


@pytest.fixture(scope="module")
def tpm_b(ca_dir: Path) -> Iterator[Swtpm]:
    yield from _tpm(ca_dir)


@pytest.fixture
def client_a(tpm_a: Swtpm) -> Iterator[TpmAttester]:
    with TpmAttester(tcti=tpm_a.tcti, ek_chain=tpm_a.ca_issuer_pem()) as a:
        yield a


@pytest.fixture
def client_b(tpm_b: Swtpm) -> Iterator[TpmAttester]:
    with TpmAttester(tcti=tpm_b.tcti, ek_chain=tpm_b.ca_issuer_pem()) as b:
        yield b


def trust_for(tpm: Swtpm) -> TrustAnchors:
    return TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)})


def at(client: TpmAttester) -> datetime:
    """A verification time derived from the data, not the clock: a day into the EK cert."""
    cert = x509.load_der_x509_certificate(client.challenge_request()["ek_cert"])
    return cert.not_valid_before_utc + timedelta(days=1)


def verify(evidence: Evidence, trust: TrustAnchors, now: datetime) -> VerifiedEvidence:
    return TpmVerifier().verify(evidence, trust=trust, collateral=NoCollateral(), now=now)


def enrol(client: TpmAttester, trust: TrustAnchors, *, code: bytes = CODE) -> VerifiedEvidence:
    """The whole server + client exchange; raises the server's typed error on rejection."""
    now = at(client)
    challenge = TpmChallenge()
    prepared = challenge.prepare(
        nonce=NONCE, request=client.challenge_request(), trust=trust, now=now
    )
    client.activate(prepared.to_client)
    client.extend_code_pcr(code)
    evidence = client.attest(report_data(nonce=NONCE, public_key=CLIENT_KEY, size=32))
    verified = verify(evidence, trust, now)
    challenge.check(evidence=evidence, verified=verified, kept=prepared.kept)
    check_report_data(found=verified.report_data, nonce=NONCE, public_key=CLIENT_KEY)
    return verified


def test_make_credential_activate_quote_verify(client_a: TpmAttester, tpm_a: Swtpm) -> None:
    # Act
    verified = enrol(client_a, trust_for(tpm_a))
    # Assert
    assert verified.code_identity == code_pcr_value(CODE)
    assert verified.measurements[f"pcr{CODE_PCR}"] == code_pcr_value(CODE)
    assert verified.claims["ek_verified"] is True
    # A primary AK in the endorsement hierarchy: resetCount/restartCount are not obfuscated.
    assert verified.claims["ak_hierarchy"] == "endorsement"
    assert verified.claims["ak_name"] == client_a.ak_name.hex()
    assert verified.platform_id is not None and len(verified.platform_id) == 32
    assert verified.warnings == ()


def test_both_ek_kinds_activate(tpm_a: Swtpm) -> None:
    # swtpm provisions an RSA-2048 EK (policy-session activation) and an ECC P-384 EK (ECDH).
    ids = set()
    for kind in ("rsa2048", "ecc384"):
        with TpmAttester(tcti=tpm_a.tcti, ek_chain=tpm_a.ca_issuer_pem(), ek=kind) as client:
            ids.add(enrol(client, trust_for(tpm_a)).platform_id)
    assert len(ids) == 2


def test_policy_appraisal_is_affirming(client_a: TpmAttester, tpm_a: Swtpm) -> None:
    policy_mod = pytest.importorskip("fedtee.attest.policy", reason="policy module not built yet")
    verified = enrol(client_a, trust_for(tpm_a))
    policy = policy_mod.Policy.from_toml(
        'version = 1\n[tee.tpm]\naccepted_tcb = ["UpToDate", "NotApplicable"]\n'
        f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(CODE).hex()}"]\n'
    )
    good = policy_mod.appraise(verified, policy, now=at(client_a))
    assert good.status.value == "affirming", good.violations
    changed = enrol(client_a, trust_for(tpm_a), code=OTHER_CODE)
    bad = policy_mod.appraise(changed, policy, now=at(client_a))
    assert bad.status.value == "contraindicated"
    assert Reason.MEASUREMENT_NOT_ALLOWED in {v.reason for v in bad.violations}


def test_changed_code_changes_the_code_pcr(client_a: TpmAttester, tpm_a: Swtpm) -> None:
    verified = enrol(client_a, trust_for(tpm_a), code=OTHER_CODE)
    assert verified.code_identity == code_pcr_value(OTHER_CODE)
    assert verified.code_identity != code_pcr_value(CODE)


def test_quote_by_another_tpm_is_rejected(
    client_a: TpmAttester, client_b: TpmAttester, tpm_a: Swtpm
) -> None:
    # A activates the credential made for its AK, but the quote comes from TPM B.
    trust, now = trust_for(tpm_a), at(client_a)
    challenge = TpmChallenge()
    prepared = challenge.prepare(
        nonce=NONCE, request=client_a.challenge_request(), trust=trust, now=now
    )
    secret = client_a.activate(prepared.to_client)
    client_b.extend_code_pcr(CODE)
    forged = client_b.attest(report_data(nonce=NONCE, public_key=CLIENT_KEY, size=32))
    forged = Evidence(
        tee=forged.tee, data=forged.data, aux={**forged.aux, "activated_secret": secret}
    )
    verified = verify(forged, trust, now)  # a valid quote in itself, by a certified TPM
    with pytest.raises(VerificationError) as info:
        challenge.check(evidence=forged, verified=verified, kept=prepared.kept)
    assert info.value.reason is Reason.AK_NOT_BOUND


def test_ak_not_bound_to_the_ek_cannot_activate(
    client_a: TpmAttester, client_b: TpmAttester, tpm_a: Swtpm
) -> None:
    # The request names B's AK with A's EK: the credential is made for B's AK name, so
    # TPM A refuses to release it for its own AK, and without the secret check fails.
    trust, now = trust_for(tpm_a), at(client_a)
    challenge = TpmChallenge()
    request = {**client_a.challenge_request(), "ak_public": client_b.ak_public}
    prepared = challenge.prepare(nonce=NONCE, request=request, trust=trust, now=now)
    with pytest.raises(DeviceError) as info:
        client_a.activate(prepared.to_client)
    assert info.value.reason is Reason.DEVICE_FAILED
    evidence = client_a.attest(report_data(nonce=NONCE, public_key=CLIENT_KEY, size=32))
    with pytest.raises(VerificationError) as info2:
        challenge.check(
            evidence=evidence, verified=verify(evidence, trust, now), kept=prepared.kept
        )
    assert info2.value.reason is Reason.AK_NOT_BOUND


def test_tpm_reset_is_detected_by_the_counters(ca_dir: Path) -> None:
    tpm = Swtpm.provision(ca_dir=ca_dir)
    try:
        tpm.start()
        with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
            first = enrol(client, trust_for(tpm))
            again = enrol(client, trust_for(tpm))
        check_counters(first.claims, again.claims)  # same power cycle: fine
        tpm.restart()  # power cycle: TPM2_Startup(CLEAR) after a reset
        with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
            after = enrol(client, trust_for(tpm))
        assert after.platform_id == first.platform_id
        with pytest.raises(VerificationError) as info:
            check_counters(first.claims, after.claims)
        assert info.value.reason is Reason.TPM_RESET
        assert after.svns["reset_count"] > first.svns["reset_count"]
    finally:
        tpm.close()


def test_ek_cert_from_an_untrusted_ca_is_rejected(client_a: TpmAttester) -> None:
    other = TrustAnchors(roots={TeeType.TPM: (FakeEkCa.generate().root,)})
    with pytest.raises(AttestationError) as info:
        TpmChallenge().prepare(
            nonce=NONCE, request=client_a.challenge_request(), trust=other, now=at(client_a)
        )
    assert info.value.reason is Reason.CHAIN_UNTRUSTED_ROOT
    evidence = client_a.attest(report_data(nonce=NONCE, public_key=CLIENT_KEY, size=32))
    with pytest.raises(VerificationError) as info2:
        verify(evidence, other, at(client_a))
    assert info2.value.reason is Reason.CHAIN_UNTRUSTED_ROOT


def test_absent_device_is_a_typed_error_naming_it() -> None:
    with pytest.raises(DeviceError) as info:
        TpmAttester(tcti="device:/dev/fedtee-no-such-tpm")
    assert info.value.reason is Reason.DEVICE_ABSENT
    assert "/dev/fedtee-no-such-tpm" in str(info.value) and "tpm2-pytss" in str(info.value)


def test_unreachable_swtpm_is_a_typed_error() -> None:
    with pytest.raises(DeviceError) as info:
        TpmAttester(tcti="swtpm:host=127.0.0.1,port=1")
    assert info.value.reason is Reason.DEVICE_FAILED
    assert "port=1" in str(info.value)


def test_malformed_credential_is_a_typed_error(client_a: TpmAttester) -> None:
    with pytest.raises(DeviceError) as info:
        client_a.activate({"credential_blob": b"\x00\x05abc", "encrypted_secret": b""})
    assert info.value.reason is Reason.DEVICE_FAILED


def test_real_evidence_round_trips_through_files_and_describe(client_a: TpmAttester) -> None:
    import json

    from fedtee.attest.evidence.tpm import describe, evidence_from_files

    evidence = client_a.attest(bytes(32))
    again = evidence_from_files(evidence.data, dict(evidence.aux))
    shown = describe(again)
    json.dumps(shown)
    assert shown["ak"]["name"] == client_a.ak_name.hex()
    assert shown["ak"]["attributes"] == [
        "fixedTPM", "fixedParent", "sensitiveDataOrigin", "userWithAuth", "restricted", "sign"
    ]  # fmt: skip
    assert shown["extra_data"] == "00" * 32
