"""Arm PSA tokens: strict CBOR / COSE parsing, claims of both profiles, IAK verification.

Real evidence: TF-M tokens in tests/data/psa (see PROVENANCE.md). Negative cases use
fedtee.attest.testing.cose's fake device. PSA tokens have no expiry; ``now`` is fixed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import cose
from fedtee.attest.evidence import psa as ev
from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.cose import FakePsaDevice, sign1
from fedtee.errors import AttestationError, CollateralError, EvidenceFormatError, Reason

DATA = Path(__file__).parents[2] / "data" / "psa"
EXPECTED = json.loads((DATA / "expected.json").read_text())
TOKEN_2 = (DATA / "psa-2_0_0_sign1.bin").read_bytes()
TOKEN_IOT = (DATA / "psa-iot-1_sign1.bin").read_bytes()
TFM_KEY = serialization.load_pem_public_key((DATA / "tfm_iak_public.pem").read_bytes())
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TFM_TRUST = TrustAnchors(keys={TeeType.PSA: (TFM_KEY,)})


class NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)


def _verify(data: bytes, trust: TrustAnchors = TFM_TRUST) -> VerifiedEvidence:
    evidence = Evidence(tee=TeeType.PSA, data=data)
    return verifier_for("psa").verify(evidence, trust=trust, collateral=NoCollateral(), now=NOW)


def _reason(fn: Any, *args: Any, **kwargs: Any) -> Reason:
    with pytest.raises(AttestationError) as info:
        fn(*args, **kwargs)
    return info.value.reason


@pytest.mark.parametrize("token", [TOKEN_2, TOKEN_IOT], ids=["psa-2.0.0", "psa-iot-1"])
def test_real_tokens_verify_with_expected_claims(token: bytes) -> None:
    exp = EXPECTED["psa-2_0_0_sign1.bin"]
    verified = _verify(token)
    assert verified.tee is TeeType.PSA
    assert verified.report_data.hex() == exp["nonce(10)"]
    assert verified.platform_id is not None
    assert verified.platform_id.hex() == exp["instance_id(256)"]
    assert verified.measurements["implementation_id"].hex() == exp["implementation_id(2396)"]
    spe = exp["software_components(2399)"][0]["measurement"]
    if token is TOKEN_IOT:
        spe = "f79f1fe6aa0445d620a017d3d5c5215a20367fc135b6ad355beda66a21b693a9"
    assert verified.measurements["sw:SPE"].hex() == spe
    components = exp["software_components(2399)"]
    assert verified.measurements["sw:NSPE"].hex() == components[1]["measurement"]
    assert verified.debug is False  # lifecycle 0x3000 SECURED
    assert verified.tcb_status is TcbStatus.NOT_APPLICABLE
    claims = verified.claims
    assert claims["boot_seed"] == exp["boot_seed(2397)"]
    assert claims["client_id"] == exp["client_id(2394)"]
    assert claims["security_lifecycle"] == 12288
    assert claims["security_lifecycle_name"] == "secured"
    assert claims["certification_reference"] == exp["certification_reference(2398)"]
    assert claims["verification_service"] == exp["verification_service(2400)"]
    assert [c["type"] for c in claims["software_components"]] == ["SPE", "NSPE"]
    assert claims["software_components"][0]["version"] == "1.6.0"
    assert claims["software_components"][0]["signer_id"] == components[0]["signer_id"]
    expected_code = hashlib.sha256(
        b"".join(sorted(bytes.fromhex(c["measurement"]) for c in claims["software_components"]))
    ).digest()
    assert verified.code_identity == expected_code
    json.dumps(dict(claims))


def test_profiles_are_recognised() -> None:
    assert ev.parse_token(TOKEN_2).claims.profile == EXPECTED["psa-2_0_0_sign1.bin"]["profile"]
    assert ev.parse_token(TOKEN_IOT).claims.profile == "PSA_IOT_PROFILE_1"


def test_strict_decoder_agrees_with_cbor2_on_real_tokens() -> None:
    for token in (TOKEN_2, TOKEN_IOT):
        ours = ev.parse_token(token)
        theirs = cbor2.loads(cbor2.loads(token).value[2])
        assert dict(cose.loads(ours.sign1.payload)).keys() == theirs.keys()
        assert ours.sign1.payload == cbor2.loads(token).value[2]


def test_wrong_key_is_signature_invalid() -> None:
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert _reason(_verify, TOKEN_2, TrustAnchors(keys={TeeType.PSA: (other,)})) is (
        Reason.SIGNATURE_INVALID
    )


def test_no_trusted_key_is_untrusted_root() -> None:
    assert _reason(_verify, TOKEN_2, TrustAnchors()) is Reason.CHAIN_UNTRUSTED_ROOT


def test_key_selected_by_instance_id_among_many() -> None:
    others = tuple(ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(3))
    verified = _verify(TOKEN_2, TrustAnchors(keys={TeeType.PSA: (*others, TFM_KEY)}))
    assert verified.platform_id is not None


def test_flipped_bit_in_payload_or_signature_is_rejected() -> None:
    payload_at = TOKEN_2.index(bytes.fromhex("a0a1a2a3"))  # inside the boot seed
    for offset in (payload_at, len(TOKEN_2) - 1):
        mutated = bytearray(TOKEN_2)
        mutated[offset] ^= 0x01
        assert _reason(_verify, bytes(mutated)) is Reason.SIGNATURE_INVALID


def test_flipped_protected_header_changes_alg_or_signature() -> None:
    sign = ev.parse_token(TOKEN_2).sign1
    at = TOKEN_2.index(sign.protected_raw)
    mutated = bytearray(TOKEN_2)
    mutated[at + len(sign.protected_raw) - 1] ^= 0x01  # alg -7 -> -8 (EdDSA, unsupported)
    assert _reason(_verify, bytes(mutated)) is Reason.EVIDENCE_FIELD_INVALID


def test_truncated_and_extended_tokens_are_rejected() -> None:
    assert _reason(_verify, TOKEN_2[:-1]) is Reason.EVIDENCE_TRUNCATED
    assert _reason(_verify, TOKEN_2 + b"\x00") is Reason.EVIDENCE_TRAILING_DATA


def test_wrong_tag_is_rejected() -> None:
    mutated = b"\xd1" + TOKEN_2[1:]  # tag 17 (COSE_Mac0) instead of 18
    assert _reason(_verify, mutated) is Reason.EVIDENCE_FIELD_INVALID


def test_fake_device_round_trip_and_debug_lifecycle() -> None:
    device = FakePsaDevice.generate()
    trust = TrustAnchors(keys={TeeType.PSA: (device.public_key,)})
    nonce = bytes(range(32))
    verified = _verify(device.token(nonce=nonce), trust)
    assert verified.report_data == nonce
    assert verified.platform_id == device.instance_id
    assert verified.debug is False
    debug = _verify(device.token(nonce=nonce, lifecycle=0x4000), trust)
    assert debug.debug is True
    assert debug.claims["security_lifecycle_name"] == "non_psa_rot_debug"


def test_repeated_component_types_get_indexed_names() -> None:
    device = FakePsaDevice.generate()
    trust = TrustAnchors(keys={TeeType.PSA: (device.public_key,)})
    comps = [("BL", b"\x01" * 32), ("BL", b"\x02" * 32), ("APP", b"\x03" * 32)]
    verified = _verify(device.token(nonce=bytes(32), components=comps), trust)
    assert {k: v[0] for k, v in verified.measurements.items() if k.startswith("sw:")} == {
        "sw:BL#0": 1,
        "sw:BL#1": 2,
        "sw:APP": 3,
    }


def test_es384_device_verifies() -> None:
    device = FakePsaDevice.generate(ec.SECP384R1())
    trust = TrustAnchors(keys={TeeType.PSA: (device.public_key,)})
    assert _verify(device.token(nonce=bytes(64)), trust).claims["alg"] == "ES384"


@pytest.mark.parametrize(
    ("drop", "change", "reason"),
    [
        (10, None, Reason.EVIDENCE_MALFORMED),  # no nonce
        (256, None, Reason.EVIDENCE_MALFORMED),  # no instance id
        (None, (10, b"\x00" * 31), Reason.EVIDENCE_FIELD_INVALID),  # nonce size
        (None, (2395, "secured"), Reason.EVIDENCE_FIELD_INVALID),  # lifecycle type
        (None, (2399, []), Reason.EVIDENCE_FIELD_INVALID),  # no components
        (None, (256, b"\x02" + bytes(32)), Reason.EVIDENCE_FIELD_INVALID),  # ueid type
    ],
)
def test_claim_errors(drop: int | None, change: tuple[int, Any] | None, reason: Reason) -> None:
    device = FakePsaDevice.generate()
    claims = device.claims(nonce=bytes(32))
    if drop is not None:
        del claims[drop]
    if change is not None:
        claims[change[0]] = change[1]
    assert _reason(ev.parse_token, sign1(claims, device.iak)) is reason


# --- strict CBOR ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (bytes.fromhex("5f4101ff"), Reason.EVIDENCE_MALFORMED),  # indefinite bstr
        (bytes.fromhex("9f01ff"), Reason.EVIDENCE_MALFORMED),  # indefinite array
        (bytes.fromhex("a201010102"), Reason.EVIDENCE_MALFORMED),  # duplicate key
        (bytes.fromhex("5bffffffffffffffff"), Reason.EVIDENCE_TRUNCATED),  # huge bstr
        (bytes.fromhex("9bffffffffffffffff"), Reason.EVIDENCE_TRUNCATED),  # huge array
        (bytes.fromhex("f93c00"), Reason.EVIDENCE_MALFORMED),  # float
        (bytes.fromhex("1c"), Reason.EVIDENCE_MALFORMED),  # reserved info
        (bytes.fromhex("62c328"), Reason.EVIDENCE_MALFORMED),  # bad UTF-8
        (bytes.fromhex("a1f401"), Reason.EVIDENCE_MALFORMED),  # bool key
        (b"\x81" * 40 + b"\x00", Reason.EVIDENCE_TOO_LARGE),  # too deep
        (b"", Reason.EVIDENCE_TRUNCATED),
    ],
)
def test_strict_cbor_rejections(data: bytes, reason: Reason) -> None:
    assert _reason(cose.loads, data) is reason


def test_cbor_size_limit() -> None:
    assert _reason(cose.loads, bytes(cose.MAX_TOKEN_BYTES + 1)) is Reason.EVIDENCE_TOO_LARGE


def test_describe_and_evidence_from_files() -> None:
    evidence = ev.evidence_from_files(TOKEN_2, {})
    shown = ev.describe(evidence)
    assert shown["tee"] == "psa" and shown["alg"] == "ES256"
    assert shown["instance_id"] == EXPECTED["psa-2_0_0_sign1.bin"]["instance_id(256)"]
    json.dumps(shown)
    assert _reason(ev.evidence_from_files, TOKEN_2, {"x": b"1"}) is Reason.EVIDENCE_FIELD_INVALID


# --- property tests -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_raises_only_format_errors_on_random_input(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_token(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(TOKEN_2) - 1), st.integers(1, 255), st.integers(0, 8))
def test_parser_raises_only_format_errors_on_mutated_token(offset: int, xor: int, cut: int) -> None:
    mutated = bytearray(TOKEN_2)
    mutated[offset] ^= xor
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_token(bytes(mutated[: len(mutated) - cut]))
