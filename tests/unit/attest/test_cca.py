"""Arm CCA tokens: platform + realm tokens, CPAK verification, realm key binding.

Real evidence: the Veraison example token in tests/data/cca (see PROVENANCE.md). Negative
cases use fedtee.attest.testing.cose's fake platform. CCA tokens have no expiry.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import cca as ev
from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.cose import FakeCcaPlatform, sign1
from fedtee.errors import AttestationError, CollateralError, EvidenceFormatError, Reason

DATA = Path(__file__).parents[2] / "data" / "cca"
TOKEN = (DATA / "cca-example-token.cbor").read_bytes()
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _b64(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def _cpak() -> ec.EllipticCurvePublicKey:
    jwk = json.loads((DATA / "cpak-pub.json").read_text())
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-384"
    return ec.EllipticCurvePublicNumbers(
        _b64(jwk["x"]), _b64(jwk["y"]), ec.SECP384R1()
    ).public_key()


CPAK_TRUST = TrustAnchors(keys={TeeType.CCA: (_cpak(),)})


def _expected() -> dict[str, str]:
    """The values named in expected.json's prose (kept there as a sentence per token)."""
    text = json.loads((DATA / "expected.json").read_text())
    return {"platform": text["platform_token"], "realm": text["realm_token"]}


def _named(text: str, label: str) -> str:
    match = re.search(label + r" ([0-9a-f]{32,})", text)
    assert match is not None, label
    return match.group(1)


class NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)


def _verify(data: bytes, trust: TrustAnchors = CPAK_TRUST) -> VerifiedEvidence:
    evidence = Evidence(tee=TeeType.CCA, data=data)
    return verifier_for("cca").verify(evidence, trust=trust, collateral=NoCollateral(), now=NOW)


def _reason(fn: Any, *args: Any, **kwargs: Any) -> Reason:
    with pytest.raises(AttestationError) as info:
        fn(*args, **kwargs)
    return info.value.reason


def test_real_token_verifies_with_expected_claims() -> None:
    exp = _expected()
    verified = _verify(TOKEN)
    assert verified.tee is TeeType.CCA
    rim = _named(exp["realm"], r"RIM\(44238\)")
    challenge = _named(exp["realm"], r"challenge\(10\)")
    instance = _named(exp["platform"], r"instance_id\(256\)")
    assert verified.measurements["rim"].hex() == rim
    assert verified.report_data.hex() == challenge
    assert verified.platform_id is not None and verified.platform_id.hex() == instance
    for i in range(4):
        assert verified.measurements[f"rem{i}"] == bytes(64)
    assert verified.measurements["personalization"] == bytes(64)
    assert verified.code_identity == hashlib.sha512(bytes.fromhex(rim) + bytes(256)).digest()
    assert verified.debug is False  # lifecycle 12291 = 0x3003, SECURED
    assert verified.tcb_status is TcbStatus.NOT_APPLICABLE
    platform = verified.claims["platform"]
    assert platform["profile"] == "http://arm.com/CCA-SSD/1.0.0"
    assert (
        platform["challenge"] == "b5973cb68baa9fc55558786b7ec67f69e40df5ba5aa921cd0c27f40587a011ea"
    )
    assert platform["implementation_id"] == (
        "7f454c4602010100000000000000000003003e00010000005058000000000000"
    )
    assert platform["lifecycle"] == 12291
    assert len(platform["software_components"]) == 13
    assert platform["alg"] == "ES384" and verified.claims["realm"]["alg"] == "ES384"
    assert verified.claims["realm"]["hash_algo"] == "sha-512"
    assert sum(1 for k in verified.measurements if k.startswith("sw:")) == 13
    json.dumps(dict(verified.claims))


def test_wrong_cpak_is_signature_invalid() -> None:
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    assert _reason(_verify, TOKEN, TrustAnchors(keys={TeeType.CCA: (other,)})) is (
        Reason.SIGNATURE_INVALID
    )
    assert _reason(_verify, TOKEN, TrustAnchors()) is Reason.CHAIN_UNTRUSTED_ROOT


def _inner(which: int) -> bytes:
    outer = cbor2.loads(TOKEN)
    raw: bytes = outer.value[which]
    return raw


@pytest.mark.parametrize("which", [ev.PLATFORM_TOKEN, ev.REALM_TOKEN])
def test_flipped_bit_in_each_signed_token_is_rejected(which: int) -> None:
    inner = _inner(which)
    payload = cbor2.loads(inner).value[2]
    at = TOKEN.index(payload) + len(payload) - 3  # inside the last claim's value
    mutated = bytearray(TOKEN)
    mutated[at] ^= 0x01
    assert _reason(_verify, bytes(mutated)) is Reason.SIGNATURE_INVALID


def test_flipped_bit_in_signatures_is_rejected() -> None:
    for which in (ev.PLATFORM_TOKEN, ev.REALM_TOKEN):
        inner = _inner(which)
        at = TOKEN.index(inner) + len(inner) - 1
        mutated = bytearray(TOKEN)
        mutated[at] ^= 0x80
        assert _reason(_verify, bytes(mutated)) is Reason.SIGNATURE_INVALID


def test_truncated_extended_and_wrong_tag() -> None:
    assert _reason(_verify, TOKEN[:-1]) is Reason.EVIDENCE_TRUNCATED
    assert _reason(_verify, TOKEN + b"\x00") is Reason.EVIDENCE_TRAILING_DATA
    outer = cbor2.loads(TOKEN)
    wrong_tag = cbor2.dumps(cbor2.CBORTag(400, outer.value))
    assert _reason(_verify, wrong_tag) is Reason.EVIDENCE_MALFORMED
    only_platform = cbor2.dumps(cbor2.CBORTag(399, {ev.PLATFORM_TOKEN: outer.value[44234]}))
    assert _reason(_verify, only_platform) is Reason.EVIDENCE_MALFORMED


def test_fake_platform_round_trip() -> None:
    platform = FakeCcaPlatform.generate()
    trust = TrustAnchors(keys={TeeType.CCA: (platform.public_key,)})
    challenge = bytes(range(64))
    verified = _verify(platform.token(challenge=challenge), trust)
    assert verified.report_data == challenge
    assert verified.debug is False
    assert _verify(platform.token(challenge=challenge, lifecycle=0x5000), trust).debug is True


def test_realm_key_not_matching_platform_challenge_is_key_not_bound() -> None:
    platform = FakeCcaPlatform.generate()
    trust = TrustAnchors(keys={TeeType.CCA: (platform.public_key,)})
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    token = platform.token(challenge=bytes(64), bound_key=other)
    assert _reason(_verify, token, trust) is Reason.KEY_NOT_BOUND


def test_realm_token_from_another_token_is_key_not_bound() -> None:
    # A genuine platform token paired with a realm token signed by a different, valid RAK.
    platform = FakeCcaPlatform.generate()
    trust = TrustAnchors(keys={TeeType.CCA: (platform.public_key,)})
    a = cbor2.loads(platform.token(challenge=bytes(64))).value
    b = cbor2.loads(platform.token(challenge=b"\x01" * 64)).value
    spliced = cbor2.dumps(cbor2.CBORTag(399, {44234: a[44234], 44241: b[44241]}))
    assert _reason(_verify, spliced, trust) is Reason.KEY_NOT_BOUND


def test_realm_claim_errors() -> None:
    platform = FakeCcaPlatform.generate()
    rak = ec.generate_private_key(ec.SECP384R1())
    outer = cbor2.loads(platform.token(challenge=bytes(64), rak=rak)).value
    realm = dict(cbor2.loads(cbor2.loads(outer[44241]).value[2]))
    for key, value in ((10, bytes(32)), (44239, [bytes(64)] * 3), (44240, "md5")):
        changed = {**realm, key: value}
        token = cbor2.dumps(cbor2.CBORTag(399, {44234: outer[44234], 44241: sign1(changed, rak)}))
        assert _reason(ev.parse_token, token) is Reason.EVIDENCE_FIELD_INVALID


def test_describe_and_evidence_from_files() -> None:
    shown = ev.describe(ev.evidence_from_files(TOKEN, {}))
    assert shown["tee"] == "cca"
    assert shown["realm"]["public_key_hash_algo"] == "sha-256"
    json.dumps(shown)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_parser_raises_only_format_errors_on_random_input(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_token(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(TOKEN) - 1), st.integers(1, 255), st.integers(0, 8))
def test_parser_raises_only_format_errors_on_mutated_token(offset: int, xor: int, cut: int) -> None:
    mutated = bytearray(TOKEN)
    mutated[offset] ^= xor
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_token(bytes(mutated[: len(mutated) - cut]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(TOKEN) - 1), st.integers(1, 255))
def test_verifier_raises_only_attestation_errors_on_mutated_token(offset: int, xor: int) -> None:
    mutated = bytearray(TOKEN)
    mutated[offset] ^= xor
    with pytest.raises(AttestationError):
        _verify(bytes(mutated))


def test_realm_key_as_cose_key_verifies() -> None:
    platform = FakeCcaPlatform.generate()
    trust = TrustAnchors(keys={TeeType.CCA: (platform.public_key,)})
    verified = _verify(platform.token(challenge=bytes(64), cose_key=True), trust)
    assert verified.claims["realm"]["public_key"].startswith("a4")  # a 4-entry CBOR map
