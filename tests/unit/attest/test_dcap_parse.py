"""DCAP quote parser (v3, v4, v5): real quotes, every layout, truncation, extension, versions,
and a property test that random or mutated input raises only EvidenceFormatError."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import dcap, sgx, tdx
from fedtee.attest.model import Evidence, TeeType
from fedtee.attest.testing.dcap import FakeIntelPki, make_quote, pack
from fedtee.attest.verify import _dcap
from fedtee.errors import CollateralError, EvidenceFormatError, Reason

DATA = Path(__file__).resolve().parents[2] / "data"
SGX_QUOTE = (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes()
TDX_V4_FILE = (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()
TDX_V4 = TDX_V4_FILE[:4935]  # the file carries 39 test bytes after the quote (PROVENANCE.md)
TDX_V5 = (DATA / "tdx" / "quote_v5_sample.dat").read_bytes()
SGX_EXPECTED = json.loads((DATA / "sgx" / "expected.json").read_text())
TDX_EXPECTED = json.loads((DATA / "tdx" / "expected.json").read_text())


def _reason(data: bytes) -> Reason:
    with pytest.raises(EvidenceFormatError) as info:
        dcap.parse_quote(data)
    return info.value.reason


def test_layout_sizes_match_intel_spec() -> None:
    assert dcap.HEADER_SIZE == 48
    assert dcap.SGX_BODY_SIZE == 384
    assert dcap.TD10_BODY_SIZE == 584
    assert dcap.TD15_BODY_SIZE == 648
    assert dcap.layout_size(dcap.QE_REPORT_SIG) == 448


def test_sgx_v3_fields_match_expected() -> None:
    q = dcap.parse_quote(SGX_QUOTE)
    body = q.body
    assert isinstance(body, dcap.SgxReportBody)
    assert q.version == SGX_EXPECTED["version"] == 3
    assert body.mrenclave.hex() == SGX_EXPECTED["mrenclave"]
    assert body.mrsigner.hex() == SGX_EXPECTED["mrsigner"]
    assert body.isv_prod_id == SGX_EXPECTED["isv_prod_id"]
    assert body.isv_svn == SGX_EXPECTED["isv_svn"]
    assert body.attributes.hex() == SGX_EXPECTED["attributes"]
    assert body.cpusvn.hex() == SGX_EXPECTED["cpusvn"]
    assert body.report_data.hex() == SGX_EXPECTED["report_data"]
    assert body.debug is SGX_EXPECTED["debug"]
    assert q.header.qe_svn == SGX_EXPECTED["qe_svn"]
    assert q.header.pce_svn == SGX_EXPECTED["pce_svn"]
    qe = q.certification.qe_report
    assert qe.mrsigner.hex() == SGX_EXPECTED["qe_mrsigner"]
    assert qe.isv_prod_id == SGX_EXPECTED["qe_isvprodid"]
    assert qe.isv_svn == SGX_EXPECTED["qe_isvsvn"]
    assert q.signed_bytes == SGX_QUOTE[:432]
    assert q.certification.pck_chain_pem.count(b"BEGIN CERTIFICATE") == 3


@pytest.mark.parametrize(
    ("data", "name", "body_type"),
    [
        (TDX_V4, "tdx_prod_quote_SPR_E4.dat", dcap.BodyType.TD10),
        (TDX_V5, "quote_v5_sample.dat", dcap.BodyType.TD15),
    ],
)
def test_tdx_fields_match_expected(data: bytes, name: str, body_type: dcap.BodyType) -> None:
    expected = TDX_EXPECTED[name]
    q = dcap.parse_quote(data)
    body = q.body
    assert isinstance(body, dcap.TdReportBody)
    assert q.version == expected["version"]
    assert q.body_type is body_type
    for field in (
        "tee_tcb_svn",
        "mrseam",
        "td_attributes",
        "xfam",
        "mrtd",
        "mrconfigid",
        "mrowner",
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "report_data",
    ):
        assert getattr(body, field).hex() == expected[field], field
    assert body.debug is expected["debug"]
    assert (body.mrservicetd is not None) is (body_type is dcap.BodyType.TD15)


def test_v5_signed_bytes_include_body_descriptor() -> None:
    q = dcap.parse_quote(TDX_V5)
    assert q.signed_bytes == TDX_V5[: 48 + 6 + 648]


def test_original_v4_file_has_trailing_bytes_rejected() -> None:
    assert _reason(TDX_V4_FILE) is Reason.EVIDENCE_TRAILING_DATA


@pytest.mark.parametrize("quote", [SGX_QUOTE, TDX_V4, TDX_V5], ids=["v3", "v4", "v5"])
@pytest.mark.parametrize("cut", [0, 1, 47, 48, 100, 431, 436, 600, 1100, -200, -1])
def test_truncation_rejected(quote: bytes, cut: int) -> None:
    assert _reason(quote[:cut]) is Reason.EVIDENCE_TRUNCATED


@pytest.mark.parametrize("quote", [SGX_QUOTE, TDX_V4, TDX_V5], ids=["v3", "v4", "v5"])
def test_extension_rejected(quote: bytes) -> None:
    assert _reason(quote + b"\x00") is Reason.EVIDENCE_TRAILING_DATA


@pytest.mark.parametrize("version", [0, 1, 2, 6, 0xFFFF])
def test_wrong_version_rejected(version: int) -> None:
    data = version.to_bytes(2, "little") + SGX_QUOTE[2:]
    assert _reason(data) is Reason.EVIDENCE_VERSION_UNSUPPORTED


def test_wrong_attestation_key_type_rejected() -> None:
    data = SGX_QUOTE[:2] + (3).to_bytes(2, "little") + SGX_QUOTE[4:]
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


def test_unknown_tee_type_rejected() -> None:
    data = TDX_V4[:4] + (0x42).to_bytes(4, "little") + TDX_V4[8:]
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


@pytest.mark.parametrize(("offset", "value"), [(48, 7), (48, 1), (50, 584), (50, 0xFFFFFFFF)])
def test_v5_body_descriptor_checked(offset: int, value: int) -> None:
    size = 2 if offset == 48 else 4
    data = TDX_V5[:offset] + value.to_bytes(size, "little") + TDX_V5[offset + size :]
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


def test_oversized_signature_length_is_truncation_not_crash() -> None:
    data = SGX_QUOTE[:432] + (0xFFFFFFFF).to_bytes(4, "little") + SGX_QUOTE[436:]
    assert _reason(data) is Reason.EVIDENCE_TRUNCATED


def test_oversized_certification_data_rejected() -> None:
    q = dcap.parse_quote(SGX_QUOTE)
    auth_len = len(q.certification.qe_auth_data)
    cert_header = 436 + 64 + 64 + 384 + 64 + 2 + auth_len
    assert int.from_bytes(SGX_QUOTE[cert_header : cert_header + 2], "little") == 5
    data = (
        SGX_QUOTE[: cert_header + 2]
        + (1 << 20).to_bytes(4, "little")
        + SGX_QUOTE[cert_header + 6 :]
    )
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


def test_certification_type_other_than_pck_chain_rejected() -> None:
    pki = FakeIntelPki.generate()
    quote = make_quote(pki.pck())
    q = dcap.parse_quote(quote)
    at = 436 + 64 + 64 + 384 + 64 + 2 + len(q.certification.qe_auth_data)
    data = quote[:at] + (4).to_bytes(2, "little") + quote[at + 2 :]
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


def test_v4_outer_certification_type_must_be_6() -> None:
    at = 48 + 584 + 4 + 128
    assert int.from_bytes(TDX_V4[at : at + 2], "little") == 6
    data = TDX_V4[:at] + (5).to_bytes(2, "little") + TDX_V4[at + 2 :]
    assert _reason(data) is Reason.EVIDENCE_FIELD_INVALID


def test_pack_round_trips_layout() -> None:
    values: dict[str, int | bytes] = {
        "cpusvn": bytes(range(16)),
        "isv_svn": 7,
        "report_data": b"r" * 64,
    }
    body = dcap.parse_sgx_report(pack(dcap.SGX_REPORT_BODY, values))
    assert (body.cpusvn, body.isv_svn, body.report_data) == (bytes(range(16)), 7, b"r" * 64)


def test_evidence_from_files_and_describe() -> None:
    ev = sgx.evidence_from_files(SGX_QUOTE, {})
    shown = sgx.describe(ev)
    json.dumps(shown)  # JSON-friendly
    assert shown["tee"] == "sgx"
    assert shown["body"]["mrenclave"] == SGX_EXPECTED["mrenclave"]
    tdx_shown = tdx.describe(tdx.evidence_from_files(TDX_V5, {}))
    json.dumps(tdx_shown)
    assert tdx_shown["body_type"] == "td15"


def test_evidence_type_must_match_quote() -> None:
    with pytest.raises(EvidenceFormatError) as info:
        sgx.evidence_from_files(TDX_V4, {})
    assert info.value.reason is Reason.EVIDENCE_FIELD_INVALID
    with pytest.raises(EvidenceFormatError):
        tdx.describe(Evidence(TeeType.TDX, SGX_QUOTE))


def test_aux_rejected() -> None:
    with pytest.raises(EvidenceFormatError) as info:
        sgx.evidence_from_files(SGX_QUOTE, {"certs": b"x"})
    assert info.value.reason is Reason.EVIDENCE_FIELD_INVALID


def _only_format_errors(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        dcap.parse_quote(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_raise_only_format_errors(data: bytes) -> None:
    _only_format_errors(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([SGX_QUOTE, TDX_V4, TDX_V5]),
    st.lists(st.tuples(st.integers(0, 5100), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 5100),
)
def test_mutated_quotes_raise_only_format_errors(
    quote: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(quote)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    _only_format_errors(bytes(data[: max(cut, 0)] if cut < len(data) else data))


# --- collateral JSON: any shape is a CollateralError, never a crash ----------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_TCB_INFO = json.loads((DATA / "tdx" / "collateral" / "tdx-tcbinfo" / "90c06f000000").read_bytes())[
    "tcbInfo"
]
_QE_ID = json.loads((DATA / "sgx" / "collateral" / "sgx-qe-identity" / "default").read_bytes())[
    "enclaveIdentity"
]


def _replace_somewhere(doc: object, path: list[int], value: object) -> object:
    """Replace one nested member of ``doc`` (chosen by ``path``) with ``value``."""
    if not path or not isinstance(doc, dict | list) or not doc:
        return value
    if isinstance(doc, dict):
        keys = sorted(doc)
        key = keys[path[0] % len(keys)]
        return {**doc, key: _replace_somewhere(doc[key], path[1:], value)}
    index = path[0] % len(doc)
    return [*doc[:index], _replace_somewhere(doc[index], path[1:], value), *doc[index + 1 :]]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 50), max_size=6), _JSON)
def test_mutated_collateral_bodies_raise_only_collateral_errors(
    path: list[int], value: object
) -> None:
    for parse, doc in ((_dcap.parse_tcb_info, _TCB_INFO), (_dcap.parse_qe_identity, _QE_ID)):
        mutated = _replace_somewhere(doc, path, value)
        if not isinstance(mutated, dict):
            continue
        with contextlib.suppress(CollateralError):
            parse(mutated, "fuzz")
