"""SGX DCAP verifier: the real Occlum quote reaches its expected.json outcome; every mutation
and every broken chain / CRL / collateral is rejected with its own reason.

Real evidence: tests/data/sgx (PROVENANCE.md). Negative cases use the fake Intel PKI of
fedtee.attest.testing.dcap with a fixed ``now``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import dcap
from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.dcap import (
    FIXED_NOW,
    FMSPC,
    FakeIntelPki,
    FakePck,
    make_quote,
)
from fedtee.attest.trust.intel import anchors
from fedtee.attest.verify import _dcap
from fedtee.attest.verify.sgx import SgxVerifier
from fedtee.errors import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Reason,
    VerificationError,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "sgx"
QUOTE = (DATA / "occlum_quote_v3.dat").read_bytes()
EXPECTED = json.loads((DATA / "expected.json").read_text())
VERIFY_AT = datetime.fromisoformat(EXPECTED["verify_at"].replace("Z", "+00:00"))
INTEL = TrustAnchors(roots={TeeType.SGX: anchors()})


class DictCollateral:
    """Tiny CollateralSource for tests (the library's own lives in attest.trust.collateral)."""

    def __init__(self, items: Mapping[tuple[str, str], bytes]) -> None:
        self.items = dict(items)

    def get(self, kind: str, key: str) -> bytes:
        try:
            return self.items[(kind, key)]
        except KeyError:
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING) from None


def bundle(path: Path) -> dict[tuple[str, str], bytes]:
    """The offline collateral bundle <dir>/<kind>/<key>."""
    return {
        (f.parent.name, f.name): f.read_bytes()
        for f in (path / "collateral").glob("*/*")
        if f.is_file()
    }


REAL = bundle(DATA)


def verify_real(
    data: bytes = QUOTE,
    *,
    collateral: Mapping[tuple[str, str], bytes] = REAL,
    trust: TrustAnchors = INTEL,
    now: datetime = VERIFY_AT,
) -> VerifiedEvidence:
    return SgxVerifier().verify(
        Evidence(TeeType.SGX, data), trust=trust, collateral=DictCollateral(collateral), now=now
    )


def reason_of(call: object, *args: object, **kwargs: object) -> tuple[type, Reason]:
    assert callable(call)
    with pytest.raises(AttestationError) as info:
        call(*args, **kwargs)
    return type(info.value), info.value.reason


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


# --- the real quote ------------------------------------------------------------------


def test_real_quote_reaches_expected_outcome() -> None:
    v = verify_real()
    assert v.tee is TeeType.SGX
    assert v.tcb_status is TcbStatus.OUT_OF_DATE
    assert v.claims["qe_identity_status"] == "UpToDate"
    assert v.claims["tcb_date"] == "2021-11-10T00:00:00Z"  # the matching level
    assert v.debug is True and v.hardware_backed is True
    for name in (
        "mrenclave",
        "mrsigner",
        "isv_prod_id",
        "isv_svn",
        "attributes",
        "report_data",
        "fmspc",
    ):
        assert v.claims[name] == EXPECTED[name], name
    assert v.claims["tcb_status"] == "OutOfDate"
    assert v.claims["pck_tcb_components"] == EXPECTED["pck_tcb"]["sgx_tcb_comp_svn"]
    assert v.claims["pce_svn"] == EXPECTED["pck_tcb"]["pcesvn"]
    assert v.measurements["mrenclave"].hex() == EXPECTED["mrenclave"]
    assert v.code_identity.hex() == EXPECTED["mrenclave"]
    assert v.report_data.hex() == EXPECTED["report_data"]
    assert v.svns["isv_svn"] == EXPECTED["isv_svn"]
    assert v.svns["qe_svn"] == EXPECTED["qe_isvsvn"]
    assert v.platform_id is not None and len(v.platform_id) == 16
    assert v.verified_at == VERIFY_AT


def test_stale_real_crls_are_warnings_not_failures() -> None:
    v = verify_real()
    stale = [w for w in v.warnings if w.startswith("crl_stale: ")]
    assert len(stale) == 2  # PCK Platform CA CRL and root CRL


def test_tcb_comes_from_pck_components_not_cpusvn() -> None:
    q = dcap.parse_quote(QUOTE)
    assert isinstance(q.body, dcap.SgxReportBody)
    assert q.body.cpusvn.hex() == EXPECTED["cpusvn"]
    pck = _dcap.verify_quote_signatures(
        q, roots=anchors(), collateral=DictCollateral(REAL), now=VERIFY_AT
    ).pck
    assert list(pck.tcb_components) == EXPECTED["pck_tcb"]["sgx_tcb_comp_svn"]
    assert pck.fmspc.hex() == EXPECTED["pck_tcb"]["fmspc"]


def test_registry_finds_sgx_verifier() -> None:
    assert isinstance(verifier_for("sgx"), SgxVerifier)


# --- mutations of the real quote --------------------------------------------------------

_Q = dcap.parse_quote(QUOTE)
_SIG_DATA = 436
_ATT_KEY = _SIG_DATA + 64
_QE_REPORT = _ATT_KEY + 64
_QE_SIG = _QE_REPORT + 384
_AUTH = _QE_SIG + 64 + 2


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (28, Reason.SIGNATURE_INVALID),  # header user_data
        (48 + 64, Reason.SIGNATURE_INVALID),  # report body mrenclave
        (48 + 320, Reason.SIGNATURE_INVALID),  # report body report_data
        (_SIG_DATA + 5, Reason.SIGNATURE_INVALID),  # quote signature
        (_QE_REPORT + 128, Reason.QE_REPORT_SIGNATURE_INVALID),  # QE report mrsigner
        (_QE_SIG + 3, Reason.QE_REPORT_SIGNATURE_INVALID),  # QE report signature
        (_ATT_KEY + 10, Reason.ATTESTATION_KEY_NOT_BOUND),  # attestation key
        (_AUTH + 1, Reason.ATTESTATION_KEY_NOT_BOUND),  # QE auth data
    ],
)
def test_flipped_bit_rejected_with_its_reason(offset: int, reason: Reason) -> None:
    kind, got = reason_of(verify_real, flip(QUOTE, offset))
    assert (kind, got) == (VerificationError, reason)


def test_truncated_and_extended_rejected() -> None:
    assert reason_of(verify_real, QUOTE[:-1]) == (EvidenceFormatError, Reason.EVIDENCE_TRUNCATED)
    assert reason_of(verify_real, QUOTE + b"\x00") == (
        EvidenceFormatError,
        Reason.EVIDENCE_TRAILING_DATA,
    )


def test_wrong_version_rejected() -> None:
    data = (7).to_bytes(2, "little") + QUOTE[2:]
    assert reason_of(verify_real, data) == (
        EvidenceFormatError,
        Reason.EVIDENCE_VERSION_UNSUPPORTED,
    )


def test_other_root_is_untrusted() -> None:
    other = TrustAnchors(roots={TeeType.SGX: (FakeIntelPki.generate().root,)})
    assert reason_of(verify_real, trust=other) == (VerificationError, Reason.CHAIN_UNTRUSTED_ROOT)


def test_no_roots_is_untrusted() -> None:
    assert reason_of(verify_real, trust=TrustAnchors()) == (
        VerificationError,
        Reason.CHAIN_UNTRUSTED_ROOT,
    )


def test_collateral_for_another_fmspc_rejected() -> None:
    tdx_info = (DATA.parent / "tdx" / "collateral" / "tdx-tcbinfo" / "50806f000000").read_bytes()
    items = {**REAL, ("sgx-tcbinfo", "00606a000000"): tdx_info}
    assert reason_of(verify_real, collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_MISMATCH,
    )


def test_tampered_tcbinfo_rejected() -> None:
    key = ("sgx-tcbinfo", "00606a000000")
    tampered = REAL[key].replace(b'"tcbStatus":"OutOfDate"', b'"tcbStatus":"UpToDate"', 1)
    assert tampered != REAL[key]
    assert reason_of(verify_real, collateral={**REAL, key: tampered}) == (
        CollateralError,
        Reason.COLLATERAL_SIGNATURE_INVALID,
    )


def test_tampered_qe_identity_rejected() -> None:
    key = ("sgx-qe-identity", "default")
    tampered = REAL[key].replace(b'"isvsvn":8', b'"isvsvn":9', 1)
    assert tampered != REAL[key]
    assert reason_of(verify_real, collateral={**REAL, key: tampered}) == (
        CollateralError,
        Reason.COLLATERAL_SIGNATURE_INVALID,
    )


def test_tcbinfo_past_next_update_rejected() -> None:
    later = datetime(2025, 4, 12, tzinfo=UTC)
    assert reason_of(verify_real, now=later) == (CollateralError, Reason.COLLATERAL_EXPIRED)


def test_pck_not_yet_valid() -> None:
    early = datetime(2023, 1, 1, tzinfo=UTC)
    assert reason_of(verify_real, now=early) == (VerificationError, Reason.CERT_NOT_YET_VALID)


@pytest.mark.parametrize(
    "missing",
    [
        ("sgx-tcbinfo", "00606a000000"),
        ("sgx-qe-identity", "default"),
        ("pck-crl", "platform"),
        ("root-crl", "intel"),
        ("tcb-signing-chain", "intel"),
    ],
)
def test_missing_collateral_rejected(missing: tuple[str, str]) -> None:
    items = {k: v for k, v in REAL.items() if k != missing}
    assert reason_of(verify_real, collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_MISSING,
    )


def test_crl_from_wrong_issuer_rejected() -> None:
    items = {**REAL, ("pck-crl", "platform"): REAL[("root-crl", "intel")]}
    assert reason_of(verify_real, collateral=items) == (VerificationError, Reason.CRL_INVALID)


def test_malformed_collateral_rejected() -> None:
    items = {**REAL, ("sgx-qe-identity", "default"): b'{"enclaveIdentity": 1}'}
    assert reason_of(verify_real, collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_MALFORMED,
    )


def test_sgx_verifier_refuses_tdx_quote() -> None:
    tdx = (DATA.parent / "tdx" / "quote_v5_sample.dat").read_bytes()
    assert reason_of(verify_real, tdx)[1] is Reason.EVIDENCE_FIELD_INVALID


# --- fake Intel PKI: chains, CRLs, TCB levels -------------------------------------------


@pytest.fixture(scope="module")
def pki() -> FakeIntelPki:
    return FakeIntelPki.generate()


@pytest.fixture(scope="module")
def pck(pki: FakeIntelPki) -> FakePck:
    return pki.pck()


def verify_fake(
    pki: FakeIntelPki,
    quote: bytes,
    *,
    collateral: Mapping[tuple[str, str], bytes] | None = None,
    now: datetime = FIXED_NOW,
) -> VerifiedEvidence:
    return SgxVerifier().verify(
        Evidence(TeeType.SGX, quote),
        trust=TrustAnchors(roots={TeeType.SGX: (pki.root,)}),
        collateral=DictCollateral(collateral if collateral is not None else pki.collateral()),
        now=now,
    )


def test_fake_quote_verifies_up_to_date(pki: FakeIntelPki, pck: FakePck) -> None:
    v = verify_fake(pki, make_quote(pck, report_data=b"\x42" * 64))
    assert v.tcb_status is TcbStatus.UP_TO_DATE
    assert v.report_data == b"\x42" * 64
    assert v.warnings == ()
    assert v.claims["fmspc"] == FMSPC.hex()


def test_fake_sgx_quote_v4_verifies(pki: FakeIntelPki, pck: FakePck) -> None:
    v = verify_fake(pki, make_quote(pck, version=4))
    assert v.claims["quote_version"] == 4


def test_expired_pck_rejected(pki: FakeIntelPki) -> None:
    old = pki.pck(
        not_before=FIXED_NOW - timedelta(days=400), not_after=FIXED_NOW - timedelta(days=1)
    )
    assert reason_of(verify_fake, pki, make_quote(old)) == (
        VerificationError,
        Reason.CERT_EXPIRED,
    )


def test_cached_chain_rechecks_time(pki: FakeIntelPki, pck: FakePck) -> None:
    quote = make_quote(pck)
    verify_fake(pki, quote)  # now the chain is cached
    after_expiry = pck.cert.not_valid_after_utc + timedelta(seconds=1)
    with pytest.raises(AttestationError) as info:
        verify_fake(pki, quote, now=after_expiry)
    assert info.value.reason is Reason.CERT_EXPIRED


def test_revoked_pck_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    items = pki.collateral(pck_revoked=[pck.cert.serial_number])
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        VerificationError,
        Reason.CERT_REVOKED,
    )


def test_revoked_platform_ca_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    items = pki.collateral()
    items[("root-crl", _dcap.root_crl_key(pki.root))] = pki.root_crl(
        revoked=[pki.platform_ca.serial_number]
    )
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        VerificationError,
        Reason.CERT_REVOKED,
    )


def test_stale_fake_crl_warns(pki: FakeIntelPki, pck: FakePck) -> None:
    items = pki.collateral()
    items[("pck-crl", "platform")] = pki.pck_crl(next_update=FIXED_NOW - timedelta(hours=1))
    v = verify_fake(pki, make_quote(pck), collateral=items)
    assert [w.split(":")[0] for w in v.warnings] == ["crl_stale"]


def test_crl_signed_by_another_key_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    other = FakeIntelPki.generate()
    other.platform_ca = pki.platform_ca  # same issuer name and cert, wrong signing key
    items = {**pki.collateral(), ("pck-crl", "platform"): other.pck_crl()}
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        VerificationError,
        Reason.CRL_INVALID,
    )


def test_pck_from_foreign_ca_rejected(pki: FakeIntelPki) -> None:
    other = FakeIntelPki.generate()
    # A PCK whose chain ends in another root, presented to a verifier trusting pki.root.
    assert reason_of(verify_fake, pki, make_quote(other.pck())) == (
        VerificationError,
        Reason.CHAIN_UNTRUSTED_ROOT,
    )


def test_tcbinfo_signed_by_another_key_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    other = FakeIntelPki.generate()
    items = pki.collateral()
    items[("sgx-tcbinfo", FMSPC.hex())] = pki.sign_json(
        "tcbInfo", pki.tcb_info_body(), key=other.tcb_key
    )
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_SIGNATURE_INVALID,
    )


def test_expired_tcb_signing_cert_rejected() -> None:
    pki = FakeIntelPki.generate(tcb_not_after=FIXED_NOW - timedelta(days=1))
    assert reason_of(verify_fake, pki, make_quote(pki.pck())) == (
        CollateralError,
        Reason.CERT_EXPIRED,
    )


def test_qe_not_named_by_identity_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    quote = make_quote(pck, qe_mrsigner=b"\x01" * 32)
    assert reason_of(verify_fake, pki, quote) == (
        VerificationError,
        Reason.QE_IDENTITY_MISMATCH,
    )


def _with_levels(
    pki: FakeIntelPki, levels: list[tuple[tuple[int, ...], int, str]]
) -> dict[tuple[str, str], bytes]:
    items = pki.collateral()
    items[("sgx-tcbinfo", FMSPC.hex())] = pki.sign_json("tcbInfo", pki.tcb_info_body(levels=levels))
    return items


@pytest.mark.parametrize(
    "status",
    [
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "OutOfDate",
        "OutOfDateConfigurationNeeded",
        "Revoked",
    ],
)
def test_each_intel_status_reported(pki: FakeIntelPki, pck: FakePck, status: str) -> None:
    items = _with_levels(pki, [((6,) * 16, 13, "UpToDate"), ((5,) * 16, 13, status)])
    v = verify_fake(pki, make_quote(pck), collateral=items)
    assert v.tcb_status is TcbStatus(status)
    if status != "UpToDate":
        assert v.advisory_ids == ("INTEL-SA-00000",)


def test_no_matching_level_is_unsupported_not_an_error(pki: FakeIntelPki, pck: FakePck) -> None:
    items = _with_levels(pki, [((6,) * 16, 13, "UpToDate"), ((5,) * 16, 14, "OutOfDate")])
    v = verify_fake(pki, make_quote(pck), collateral=items)
    assert v.tcb_status is TcbStatus.UNSUPPORTED


def test_one_lower_component_drops_to_next_level(pki: FakeIntelPki) -> None:
    comps = [5] * 16
    comps[3] = 4
    low = pki.pck(tcb_components=comps)
    items = _with_levels(pki, [((5,) * 16, 13, "UpToDate"), ((4,) * 16, 13, "SWHardeningNeeded")])
    assert verify_fake(pki, make_quote(low), collateral=items).tcb_status is (
        TcbStatus.SW_HARDENING_NEEDED
    )


@pytest.mark.parametrize(
    ("qe_svn", "expected"),
    [(8, TcbStatus.UP_TO_DATE), (7, TcbStatus.OUT_OF_DATE), (5, TcbStatus.UNSUPPORTED)],
)
def test_qe_status_converges(
    pki: FakeIntelPki, pck: FakePck, qe_svn: int, expected: TcbStatus
) -> None:
    v = verify_fake(pki, make_quote(pck, qe_svn=qe_svn))
    assert v.tcb_status is expected


def test_qe_out_of_date_with_configuration_needed(pki: FakeIntelPki, pck: FakePck) -> None:
    items = _with_levels(pki, [((5,) * 16, 13, "ConfigurationNeeded")])
    v = verify_fake(pki, make_quote(pck, qe_svn=6), collateral=items)
    assert v.tcb_status is TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED


def test_pck_without_sgx_extensions_rejected(pki: FakeIntelPki) -> None:
    with pytest.raises(VerificationError) as info:
        _dcap.parse_pck_extensions(pki.platform_ca)
    assert info.value.reason is Reason.CERT_MALFORMED


# --- property: the whole verifier fails closed ------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(QUOTE) - 1), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_mutated_quote_raises_only_attestation_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(QUOTE)
    for pos, xor in edits:
        data[pos] ^= xor
    try:
        v = verify_real(bytes(data))
    except AttestationError:
        return
    # Only bytes no one signs or reads may change without rejection (the PEM's trailing
    # padding); then the outcome must be the original one.
    assert v.tcb_status is TcbStatus.OUT_OF_DATE
    assert v.claims["mrenclave"] == EXPECTED["mrenclave"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(REAL)), st.integers(0, 5000), st.integers(1, 255))
def test_mutated_collateral_raises_only_attestation_errors(
    key: tuple[str, str], pos: int, xor: int
) -> None:
    data = bytearray(REAL[key])
    data[pos % len(data)] ^= xor
    with contextlib.suppress(AttestationError):
        verify_real(collateral={**REAL, key: bytes(data)})


def test_embedded_intel_root_is_the_pinned_one() -> None:
    (root,) = anchors()
    assert _dcap.fingerprint(root) == _dcap.INTEL_ROOT_FINGERPRINT
    assert _dcap.root_crl_key(root) == "intel"
    assert root.subject == root.issuer  # self-signed
    shared = DATA.parent.parent.parent / "src" / "fedtee" / "attest" / "trust"
    assert (shared / "intel_sgx_root_ca.pem").read_bytes().count(b"BEGIN CERTIFICATE") == 1


def test_sgx_verifier_refuses_evidence_labelled_otherwise() -> None:
    with pytest.raises(EvidenceFormatError) as info:
        SgxVerifier().verify(
            Evidence(TeeType.TDX, QUOTE),
            trust=INTEL,
            collateral=DictCollateral(REAL),
            now=VERIFY_AT,
        )
    assert info.value.reason is Reason.EVIDENCE_TYPE_UNKNOWN


def test_pck_key_cannot_sign_tcb_info(pki: FakeIntelPki, pck: FakePck) -> None:
    # A platform's own PCK chain offered as the TCB signing chain, with a tcbInfo it signed.
    items = pki.collateral()
    items[("tcb-signing-chain", "intel")] = pck.chain_pem
    items[("sgx-tcbinfo", FMSPC.hex())] = pki.sign_json("tcbInfo", pki.tcb_info_body(), key=pck.key)
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        CollateralError,
        Reason.CHAIN_INVALID,
    )


def test_pck_that_is_a_ca_rejected(pki: FakeIntelPki) -> None:
    rogue = pki.pck(leaf_is_ca=True)
    assert reason_of(verify_fake, pki, make_quote(rogue)) == (
        VerificationError,
        Reason.CHAIN_INVALID,
    )


def test_tcb_type_other_than_zero_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    body = pki.tcb_info_body()
    body["tcbType"] = 1
    items = {**pki.collateral(), ("sgx-tcbinfo", FMSPC.hex()): pki.sign_json("tcbInfo", body)}
    assert reason_of(verify_fake, pki, make_quote(pck), collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_MALFORMED,
    )
