"""TDX DCAP verifier: the real v4 quote verifies with no matching TCB level (Unsupported), the
real v5 quote verifies but its tcbInfo's signing certificate has expired; TDX module and
TEE_TCB_SVN checks with the fake Intel PKI.

Real evidence: tests/data/tdx (PROVENANCE.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import dcap
from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.dcap import FIXED_NOW, FMSPC, FakeIntelPki, FakePck, make_quote
from fedtee.attest.trust.intel import anchors
from fedtee.attest.verify import _dcap
from fedtee.attest.verify.tdx import TdxVerifier
from fedtee.errors import (
    AttestationError,
    CollateralError,
    EvidenceFormatError,
    Reason,
    VerificationError,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "tdx"
V4 = (DATA / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935]  # see PROVENANCE.md
V5 = (DATA / "quote_v5_sample.dat").read_bytes()
EXPECTED = json.loads((DATA / "expected.json").read_text())
E4 = EXPECTED["tdx_prod_quote_SPR_E4.dat"]
E5 = EXPECTED["quote_v5_sample.dat"]
V4_AT = datetime.fromisoformat(E4["verify_at"].replace("Z", "+00:00"))
V5_AT = datetime.fromisoformat(E5["verify_at"].replace("Z", "+00:00"))
INTEL = TrustAnchors(roots={TeeType.TDX: anchors()})


class DictCollateral:
    def __init__(self, items: Mapping[tuple[str, str], bytes]) -> None:
        self.items = dict(items)

    def get(self, kind: str, key: str) -> bytes:
        try:
            return self.items[(kind, key)]
        except KeyError:
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING) from None


REAL = {
    (f.parent.name, f.name): f.read_bytes()
    for f in (DATA / "collateral").glob("*/*")
    if f.is_file()
}


def verify(
    data: bytes,
    *,
    now: datetime,
    collateral: Mapping[tuple[str, str], bytes] = REAL,
    trust: TrustAnchors = INTEL,
) -> VerifiedEvidence:
    return TdxVerifier().verify(
        Evidence(TeeType.TDX, data), trust=trust, collateral=DictCollateral(collateral), now=now
    )


def reason_of(data: bytes, **kwargs: Any) -> tuple[type, Reason]:
    with pytest.raises(AttestationError) as info:
        verify(data, **kwargs)
    return type(info.value), info.value.reason


def flip(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1
    return bytes(out)


# --- real v4 ---------------------------------------------------------------------------


def test_v4_verifies_with_no_matching_tcb_level() -> None:
    v = verify(V4, now=V4_AT)
    assert v.tee is TeeType.TDX
    assert v.tcb_status is TcbStatus.UNSUPPORTED  # appraisal rejects it, verification doesn't
    assert v.claims["qe_identity_status"] == "UpToDate"
    assert v.debug is E4["debug"]
    assert v.hardware_backed is True
    for name in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam", "mrconfigid", "mrowner"):
        assert v.measurements[name].hex() == E4[name], name
        assert v.claims[name] == E4[name]
    for name in ("tee_tcb_svn", "td_attributes", "xfam", "report_data"):
        assert v.claims[name] == E4[name], name
    assert v.claims["fmspc"] == E4["pck_tcb"]["fmspc"]
    assert v.claims["pck_tcb_components"] == E4["pck_tcb"]["sgx_tcb_comp_svn"]
    mrtd_rtmrs = b"".join(
        bytes.fromhex(E4[n]) for n in ("mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3")
    )
    assert v.code_identity == hashlib.sha384(mrtd_rtmrs).digest()
    assert v.report_data.hex() == E4["report_data"]


def test_registry_finds_tdx_verifier() -> None:
    assert isinstance(verifier_for(TeeType.TDX), TdxVerifier)


_TD_SIG = 48 + 584 + 4
_TD_ATT_KEY = _TD_SIG + 64
_TD_QE_REPORT = _TD_ATT_KEY + 64 + 6


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (30, Reason.SIGNATURE_INVALID),  # header user_data
        (48 + 136, Reason.SIGNATURE_INVALID),  # MRTD
        (48 + 520, Reason.SIGNATURE_INVALID),  # report_data
        (_TD_SIG + 1, Reason.SIGNATURE_INVALID),
        (_TD_QE_REPORT + 64, Reason.QE_REPORT_SIGNATURE_INVALID),
        (_TD_ATT_KEY + 7, Reason.ATTESTATION_KEY_NOT_BOUND),
    ],
)
def test_v4_flipped_bit_rejected(offset: int, reason: Reason) -> None:
    assert reason_of(flip(V4, offset), now=V4_AT) == (VerificationError, reason)


def test_v4_truncated_extended_wrong_version() -> None:
    assert reason_of(V4[:-10], now=V4_AT) == (EvidenceFormatError, Reason.EVIDENCE_TRUNCATED)
    assert reason_of(V4 + b"x", now=V4_AT) == (EvidenceFormatError, Reason.EVIDENCE_TRAILING_DATA)
    assert reason_of((9).to_bytes(2, "little") + V4[2:], now=V4_AT) == (
        EvidenceFormatError,
        Reason.EVIDENCE_VERSION_UNSUPPORTED,
    )


def test_v4_other_root_untrusted() -> None:
    other = TrustAnchors(roots={TeeType.TDX: (FakeIntelPki.generate().root,)})
    assert reason_of(V4, now=V4_AT, trust=other) == (
        VerificationError,
        Reason.CHAIN_UNTRUSTED_ROOT,
    )


def test_v4_tampered_tcbinfo_and_wrong_fmspc() -> None:
    key = ("tdx-tcbinfo", "50806f000000")
    tampered = REAL[key].replace(b'"pcesvn":11', b'"pcesvn":10', 1)
    assert tampered != REAL[key]
    assert reason_of(V4, now=V4_AT, collateral={**REAL, key: tampered}) == (
        CollateralError,
        Reason.COLLATERAL_SIGNATURE_INVALID,
    )
    other = {**REAL, key: REAL[("tdx-tcbinfo", "90c06f000000")]}
    assert reason_of(V4, now=V4_AT, collateral=other) == (
        CollateralError,
        Reason.COLLATERAL_MISMATCH,
    )


def test_sgx_collateral_for_tdx_quote_rejected() -> None:
    sgx_qe = (DATA.parent / "sgx" / "collateral" / "sgx-qe-identity" / "default").read_bytes()
    items = {**REAL, ("tdx-qe-identity", "default"): sgx_qe}
    # The SGX QE identity is outside its window in 2023 too, but the id is checked first.
    assert reason_of(V4, now=V4_AT, collateral=items) == (
        CollateralError,
        Reason.COLLATERAL_MISMATCH,
    )


# --- real v5 ---------------------------------------------------------------------------


def test_v5_quote_and_pck_chain_valid() -> None:
    q = dcap.parse_quote(V5)
    sigs = _dcap.verify_quote_signatures(
        q, roots=anchors(), collateral=DictCollateral(REAL), now=V5_AT
    )
    assert sigs.pck.fmspc.hex() == E5["pck_tcb"]["fmspc"]
    assert list(sigs.pck.tcb_components) == E5["pck_tcb"]["sgx_tcb_comp_svn"]
    assert sigs.pck.pcesvn == E5["pck_tcb"]["pcesvn"]
    assert any(w.startswith("crl_stale: ") for w in sigs.warnings)


def test_v5_expired_tcb_signing_certificate_rejected() -> None:
    assert reason_of(V5, now=V5_AT) == (CollateralError, Reason.CERT_EXPIRED)


def test_v5_renewed_fake_signing_chain_is_really_checked() -> None:
    fake = FakeIntelPki.generate(now=V5_AT)
    trust = TrustAnchors(roots={TeeType.TDX: (*anchors(), fake.root)})
    items = {
        **REAL,
        ("tcb-signing-chain", "intel"): fake.tcb_signing_chain_pem(),
        ("root-crl", _dcap.root_crl_key(fake.root)): fake.root_crl(),
    }
    # The renewed chain is valid now, but Intel's tcbInfo is not signed by its key.
    assert reason_of(V5, now=V5_AT, collateral=items, trust=trust) == (
        CollateralError,
        Reason.COLLATERAL_SIGNATURE_INVALID,
    )


# --- fake TDX quotes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki() -> FakeIntelPki:
    return FakeIntelPki.generate()


@pytest.fixture(scope="module")
def pck(pki: FakeIntelPki) -> FakePck:
    return pki.pck()


def verify_fake(
    pki: FakeIntelPki, quote: bytes, items: Mapping[tuple[str, str], bytes] | None = None
) -> VerifiedEvidence:
    return TdxVerifier().verify(
        Evidence(TeeType.TDX, quote),
        trust=TrustAnchors(roots={TeeType.TDX: (pki.root,)}),
        collateral=DictCollateral(items if items is not None else pki.collateral(tdx=True)),
        now=FIXED_NOW,
    )


def _tcbinfo(pki: FakeIntelPki, body: dict[str, Any]) -> dict[tuple[str, str], bytes]:
    items = pki.collateral(tdx=True)
    items[("tdx-tcbinfo", FMSPC.hex())] = pki.sign_json("tcbInfo", body)
    return items


@pytest.mark.parametrize(("version", "td15"), [(4, False), (5, False), (5, True)])
def test_fake_tdx_quotes_verify(pki: FakeIntelPki, pck: FakePck, version: int, td15: bool) -> None:
    quote = make_quote(
        pck,
        version=version,
        tdx=True,
        td15=td15,
        body={"mrtd": b"\x11" * 48, "td_attributes": b"\x01" + bytes(7)},
    )
    v = verify_fake(pki, quote)
    assert v.tcb_status is TcbStatus.UP_TO_DATE
    assert v.measurements["mrtd"] == b"\x11" * 48
    assert v.debug is True
    assert ("mrservicetd" in v.measurements) is td15


def test_tdx_module_signer_mismatch_rejected(pki: FakeIntelPki, pck: FakePck) -> None:
    quote = make_quote(pck, version=4, tdx=True, body={"mrsignerseam": b"\x01" * 48})
    with pytest.raises(VerificationError) as info:
        verify_fake(pki, quote)
    assert info.value.reason is Reason.TCB_MISMATCH


def test_tee_tcb_svn_below_every_level_is_unsupported(pki: FakeIntelPki, pck: FakePck) -> None:
    body = pki.tcb_info_body(tdx=True, tdx_components=(3,) + (0,) * 15)
    quote = make_quote(pck, version=4, tdx=True, body={"tee_tcb_svn": bytes([2]) + bytes(15)})
    assert verify_fake(pki, quote, _tcbinfo(pki, body)).tcb_status is TcbStatus.UNSUPPORTED
    ok = make_quote(pck, version=4, tdx=True, body={"tee_tcb_svn": bytes([3]) + bytes(15)})
    assert verify_fake(pki, ok, _tcbinfo(pki, body)).tcb_status is TcbStatus.UP_TO_DATE


def _with_module_identities(pki: FakeIntelPki) -> dict[tuple[str, str], bytes]:
    body = pki.tcb_info_body(tdx=True, tdx_components=(9, 9, 2) + (0,) * 13)
    body["tdxModuleIdentities"] = [
        {
            "id": "TDX_01",
            "mrsigner": "00" * 48,
            "attributes": "00" * 8,
            "attributesMask": "FF" * 8,
            "tcbLevels": [
                {"tcb": {"isvsvn": 6}, "tcbDate": "2024-11-13T00:00:00Z", "tcbStatus": "UpToDate"},
                {
                    "tcb": {"isvsvn": 2},
                    "tcbDate": "2023-08-09T00:00:00Z",
                    "tcbStatus": "OutOfDate",
                    "advisoryIDs": ["INTEL-SA-01036"],
                },
            ],
        }
    ]
    return _tcbinfo(pki, body)


@pytest.mark.parametrize(
    ("svn", "expected"),
    [(7, TcbStatus.UP_TO_DATE), (4, TcbStatus.OUT_OF_DATE), (1, TcbStatus.UNSUPPORTED)],
)
def test_tdx_module_identity_status(
    pki: FakeIntelPki, pck: FakePck, svn: int, expected: TcbStatus
) -> None:
    # Major version 1: the first two TEE_TCB_SVN bytes are the module's, not compared with
    # the level's tdxtcbcomponents (9, 9 would fail otherwise).
    quote = make_quote(
        pck, version=5, tdx=True, td15=True, body={"tee_tcb_svn": bytes([svn, 1, 2]) + bytes(13)}
    )
    v = verify_fake(pki, quote, _with_module_identities(pki))
    assert v.tcb_status is expected
    if expected is TcbStatus.OUT_OF_DATE:
        assert "INTEL-SA-01036" in v.advisory_ids


def test_unknown_tdx_module_major_is_unsupported(pki: FakeIntelPki, pck: FakePck) -> None:
    quote = make_quote(pck, version=5, tdx=True, body={"tee_tcb_svn": bytes([7, 3, 2]) + bytes(13)})
    v = verify_fake(pki, quote, _with_module_identities(pki))
    assert v.tcb_status is TcbStatus.UNSUPPORTED


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(V4) - 1), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_mutated_v4_raises_only_attestation_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(V4)
    for pos, xor in edits:
        data[pos] ^= xor
    try:
        v = verify(bytes(data), now=V4_AT)
    except AttestationError:
        return
    assert v.tcb_status is TcbStatus.UNSUPPORTED
    assert v.claims["mrtd"] == E4["mrtd"]
