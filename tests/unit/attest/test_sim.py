import contextlib
import datetime as dt
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.attesters.measure import measure_code
from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.evidence import sim as sim_evidence
from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.verify.sim import SIMULATED_WARNING, SimVerifier
from fedtee.errors import (
    ConfigError,
    EvidenceFormatError,
    FedteeError,
    Reason,
    VerificationError,
)

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
MEASUREMENT = bytes(range(48))
REPORT_DATA = bytes(range(64))


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise AssertionError("sim needs no collateral")


@pytest.fixture(scope="module")
def root() -> SimRoot:
    return SimRoot.generate()


@pytest.fixture(scope="module")
def evidence(root: SimRoot) -> Evidence:
    attester = SimAttester(
        platform=SimPlatform.generate(root), measurement=MEASUREMENT, svn=3, clock=lambda: NOW
    )
    return attester.attest(REPORT_DATA)


def _verify(evidence: Evidence, root: SimRoot):  # type: ignore[no-untyped-def]
    trust = TrustAnchors(roots={TeeType.SIM: (root.cert,)})
    return SimVerifier().verify(evidence, trust=trust, collateral=_NoCollateral(), now=NOW)


def test_verified_claims_and_loud_sim_marking(evidence: Evidence, root: SimRoot) -> None:
    verified = _verify(evidence, root)
    assert verified.tee is TeeType.SIM
    assert verified.hardware_backed is False
    assert SIMULATED_WARNING in verified.warnings
    assert verified.measurements["measurement"] == MEASUREMENT
    assert verified.code_identity == MEASUREMENT
    assert verified.report_data == REPORT_DATA
    assert verified.svns["svn"] == 3
    assert verified.debug is False
    assert verified.produced_at == NOW


def test_debug_flag_is_reported(root: SimRoot) -> None:
    attester = SimAttester(platform=SimPlatform.generate(root), measurement=MEASUREMENT, debug=True)
    assert _verify(attester.attest(REPORT_DATA), root).debug is True


def test_untrusted_root_is_rejected(evidence: Evidence) -> None:
    with pytest.raises(VerificationError) as err:
        _verify(evidence, SimRoot.generate())
    assert err.value.reason is Reason.CHAIN_UNTRUSTED_ROOT


def test_no_sim_root_by_default(evidence: Evidence) -> None:
    with pytest.raises(VerificationError) as err:
        SimVerifier().verify(evidence, trust=TrustAnchors(), collateral=_NoCollateral(), now=NOW)
    assert err.value.reason is Reason.CHAIN_UNTRUSTED_ROOT


@pytest.mark.parametrize("field", ["svn", "timestamp_ms", "measurement", "report_data"])
def test_flipped_bit_in_signed_field_breaks_signature(
    evidence: Evidence, root: SimRoot, field: str
) -> None:
    offset, _ = sim_evidence.LAYOUT[field]
    data = bytearray(evidence.data)
    data[offset] ^= 0x01
    with pytest.raises(VerificationError) as err:
        _verify(Evidence(tee=TeeType.SIM, data=bytes(data), aux=evidence.aux), root)
    assert err.value.reason is Reason.SIGNATURE_INVALID


def test_platform_id_of_another_key_is_not_bound(evidence: Evidence, root: SimRoot) -> None:
    offset, _ = sim_evidence.LAYOUT["platform_id"]
    data = bytearray(evidence.data)
    data[offset] ^= 0x80
    with pytest.raises(VerificationError) as err:
        _verify(Evidence(tee=TeeType.SIM, data=bytes(data), aux=evidence.aux), root)
    assert err.value.reason is Reason.KEY_NOT_BOUND


def test_expired_platform_certificate(root: SimRoot) -> None:
    platform = SimPlatform.generate(root, not_after=NOW - dt.timedelta(days=1))
    evidence = SimAttester(platform=platform, measurement=MEASUREMENT).attest(REPORT_DATA)
    with pytest.raises(VerificationError) as err:
        _verify(evidence, root)
    assert err.value.reason is Reason.CERT_EXPIRED


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d[:-1], Reason.EVIDENCE_TRUNCATED),
        (lambda d: d + b"\x00", Reason.EVIDENCE_TRAILING_DATA),
        (lambda d: d[:4] + struct.pack("<H", 2) + d[6:], Reason.EVIDENCE_VERSION_UNSUPPORTED),
        (lambda d: b"XXXX" + d[4:], Reason.EVIDENCE_MALFORMED),
        (lambda d: d[:6] + struct.pack("<H", 0x8000) + d[8:], Reason.EVIDENCE_FIELD_INVALID),
    ],
)
def test_malformed_reports(evidence: Evidence, mutate, reason: Reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EvidenceFormatError) as err:
        sim_evidence.parse_report(mutate(evidence.data))
    assert err.value.reason is reason


def test_unknown_aux_is_rejected(evidence: Evidence, root: SimRoot) -> None:
    aux = dict(evidence.aux) | {"extra": b"x"}
    with pytest.raises(EvidenceFormatError):
        _verify(Evidence(tee=TeeType.SIM, data=evidence.data, aux=aux), root)


def test_describe_marks_simulation(evidence: Evidence) -> None:
    described = sim_evidence.describe(evidence)
    assert described["hardware_backed"] is False
    assert described["measurement"] == MEASUREMENT.hex()


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_parser_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        sim_evidence.parse_report(data)


@settings(max_examples=200)
@given(st.integers(min_value=0, max_value=231), st.integers(min_value=1, max_value=255))
def test_any_byte_change_is_rejected(evidence: Evidence, root: SimRoot, pos: int, x: int) -> None:
    data = bytearray(evidence.data)
    data[pos] ^= x
    with pytest.raises(FedteeError):
        _verify(Evidence(tee=TeeType.SIM, data=bytes(data), aux=evidence.aux), root)


def test_measure_code_changes_with_one_byte(tmp_path: Path) -> None:
    a = tmp_path / "trainer.py"
    a.write_bytes(b"def fit():\n    return 1\n")
    first = measure_code([a], config=b"lr=0.1")
    assert len(first) == 48
    assert measure_code([a], config=b"lr=0.1") == first
    assert measure_code([a], config=b"lr=0.2") != first
    a.write_bytes(b"def fit():\n    return 2\n")
    assert measure_code([a], config=b"lr=0.1") != first


def test_root_names_itself_simulated_and_round_trips_through_pem(root: SimRoot) -> None:
    cn = root.cert.subject.rfc4514_string()
    assert "SIMULATED" in cn and "NOT HARDWARE" in cn
    again = SimRoot.from_pem(root.cert_pem(), root.key_pem())
    assert again.cert == root.cert
    other = SimRoot.generate()
    with pytest.raises(ConfigError, match="does not match"):
        SimRoot.from_pem(root.cert_pem(), other.key_pem())
    with pytest.raises(ConfigError):
        SimRoot.from_pem(b"not a pem", root.key_pem())


def test_evidence_from_files_round_trips(evidence: Evidence, root: SimRoot) -> None:
    again = sim_evidence.evidence_from_files(evidence.data, dict(evidence.aux))
    assert again == evidence
    assert _verify(again, root).code_identity == MEASUREMENT


def test_platform_cert_must_not_be_a_ca(root: SimRoot) -> None:
    # The root's own certificate as "platform" certificate: signed by the root, but a CA.
    attester = SimAttester(
        platform=SimPlatform(key=root.key, cert=root.cert), measurement=MEASUREMENT
    )
    with pytest.raises(VerificationError) as err:
        _verify(attester.attest(REPORT_DATA), root)
    assert err.value.reason is Reason.CHAIN_INVALID


def test_platform_cert_not_yet_valid(root: SimRoot) -> None:
    platform = SimPlatform.generate(root, not_before=NOW + dt.timedelta(days=1))
    evidence = SimAttester(platform=platform, measurement=MEASUREMENT).attest(REPORT_DATA)
    with pytest.raises(VerificationError) as err:
        _verify(evidence, root)
    assert err.value.reason is Reason.CERT_NOT_YET_VALID


def test_garbage_platform_cert_is_cert_malformed(evidence: Evidence, root: SimRoot) -> None:
    bad = Evidence(tee=TeeType.SIM, data=evidence.data, aux={"platform_cert": b"\x30\x03abc"})
    with pytest.raises(VerificationError) as err:
        _verify(bad, root)
    assert err.value.reason is Reason.CERT_MALFORMED


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_platform_cert_raises_only_typed_errors(
    evidence: Evidence, root: SimRoot, data: st.DataObject
) -> None:
    cert = bytearray(evidence.aux["platform_cert"])
    pos = data.draw(st.integers(min_value=0, max_value=len(cert) - 1))
    cert[pos] ^= data.draw(st.integers(min_value=1, max_value=255))
    mutated = Evidence(tee=TeeType.SIM, data=evidence.data, aux={"platform_cert": bytes(cert)})
    with pytest.raises(FedteeError):
        _verify(mutated, root)
