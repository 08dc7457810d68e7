"""AttestationResult: trustworthiness vector, JSON round trip, EAR JWT signing and checking."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.model import _SEAL, TcbStatus, TeeType, VerifiedEvidence
from fedtee.attest.policy import Policy, appraise
from fedtee.attest.result import (
    EAR_PROFILE,
    TRUST_CLAIMS,
    AttestationResult,
    Status,
    Violation,
    verify_ear_jwt,
)
from fedtee.errors import AttestationError, Reason, VerificationError

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
MEASUREMENT = bytes(range(48))
KEY = ec.derive_private_key(0x1234567890ABCDEF, ec.SECP256R1())
OTHER_KEY = ec.derive_private_key(0xFEDCBA0987654321, ec.SECP256R1())

POLICY = f"""
version = 1
[tee.sev-snp]
debug = "forbid"
accepted_tcb = ["UpToDate"]
warn_tcb = ["OutOfDate"]
[tee.sev-snp.reference]
measurement = ["{MEASUREMENT.hex()}"]
[tee.sev-snp.min_svn]
"tcb.snp" = 5
[tee.sim]
allow_simulated = true
"""


def _verified(**overrides: object) -> VerifiedEvidence:
    fields: dict[str, object] = {
        "tee": TeeType.SEV_SNP,
        "report_data": bytes(64),
        "measurements": {"measurement": MEASUREMENT},
        "debug": False,
        "platform_id": b"\x01" * 64,
        "code_identity": MEASUREMENT,
        "tcb_status": TcbStatus.UP_TO_DATE,
        "svns": {"tcb.snp": 5},
        "hardware_backed": True,
        "claims": {"measurement": MEASUREMENT.hex(), "vmpl": 0},
        "verified_at": NOW,
        "produced_at": NOW,
        "seal": _SEAL,
    }
    fields.update(overrides)
    return VerifiedEvidence(**fields)  # type: ignore[arg-type]


def _appraise(**overrides: object) -> AttestationResult:
    return appraise(_verified(**overrides), Policy.from_toml(POLICY), now=NOW)


# --- trustworthiness vector ------------------------------------------------------------------


def test_affirming_vector_has_every_ar4si_claim() -> None:
    result = _appraise()
    assert result.status is Status.AFFIRMING
    assert set(result.trust_vector) == set(TRUST_CLAIMS)
    for claim in ("instance-identity", "executables", "configuration", "hardware"):
        assert result.trust_vector[claim] == 2, claim
    assert result.trust_vector["runtime-opaque"] == 2
    # fedtee makes no claim about file systems, storage or sourced data.
    assert result.trust_vector["file-system"] == 0


@pytest.mark.parametrize(
    ("overrides", "claim", "reason"),
    [
        ({"measurements": {"measurement": b"\xff" * 48}}, "executables", "measurement_not_allowed"),
        ({"debug": True}, "configuration", "debug_enabled"),
        ({"svns": {"tcb.snp": 4}}, "configuration", "svn_below_minimum"),
        ({"tcb_status": TcbStatus.REVOKED}, "hardware", "tcb_revoked"),
        ({"tcb_status": TcbStatus.UNSUPPORTED}, "hardware", "tcb_unsupported"),
        ({"tee": TeeType.TDX}, "instance-identity", "tee_not_allowed"),
    ],
)
def test_each_violation_contraindicates_its_own_claim(
    overrides: dict[str, object], claim: str, reason: str
) -> None:
    result = _appraise(**overrides)
    assert result.status is Status.CONTRAINDICATED
    assert reason in {r.value for r in result.reasons}
    assert result.trust_vector[claim] == 96
    untouched = {"executables", "configuration", "hardware"} - {claim}
    if reason != "tee_not_allowed":
        for other in untouched:
            assert result.trust_vector[other] == 2, other


def test_warn_tcb_gives_a_warning_tier_on_hardware_only() -> None:
    result = _appraise(tcb_status=TcbStatus.OUT_OF_DATE)
    assert result.status is Status.WARNING and result.accepted and not result.affirming
    assert result.trust_vector["hardware"] == 32
    assert result.trust_vector["executables"] == 2


def test_sim_is_never_affirming_and_claims_no_opaque_runtime() -> None:
    result = _appraise(tee=TeeType.SIM, hardware_backed=False, tcb_status=TcbStatus.NOT_APPLICABLE)
    assert result.status is Status.WARNING
    assert result.hardware_backed is False
    assert result.trust_vector["hardware"] == 32
    assert result.trust_vector["runtime-opaque"] == 0


# --- JSON --------------------------------------------------------------------------------


def test_json_round_trip_keeps_every_field() -> None:
    result = _appraise(debug=True, svns={"tcb.snp": 1})
    back = AttestationResult.from_json(result.to_json())
    assert back == result
    raw = json.loads(result.to_json())
    assert raw["status"] == "contraindicated"
    assert raw["code_identity"] == MEASUREMENT.hex()
    assert {v["reason"] for v in raw["violations"]} == {"debug_enabled", "svn_below_minimum"}
    assert all(set(v) == {"reason", "field", "found", "expected"} for v in raw["violations"])


def test_violation_text_names_field_found_and_expected() -> None:
    text = str(Violation(Reason.DEBUG_ENABLED, "debug", "true", "false"))
    assert text == "[debug_enabled] debug: found true, expected false"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"status": "great"}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_from_json_fails_typed(text: str) -> None:
    with pytest.raises(AttestationError):
        AttestationResult.from_json(text)


def test_from_json_rejects_an_unknown_reason() -> None:
    raw = json.loads(_appraise(debug=True).to_json())
    raw["violations"][0]["reason"] = "no_such_reason"
    with pytest.raises(AttestationError):
        AttestationResult.from_json(json.dumps(raw))


# --- EAR JWT ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(header: dict[str, object], payload: dict[str, object]) -> str:
    """Sign arbitrary header/payload with KEY, to test checks that come after the signature."""
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    signing_input = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    r, s = decode_dss_signature(KEY.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return signing_input + "." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_ear_jwt_carries_the_ear_claims_and_round_trips() -> None:
    result = _appraise(tcb_status=TcbStatus.OUT_OF_DATE)
    token = result.to_ear_jwt(KEY, issuer="fedtee-test", now=NOW, ttl=dt.timedelta(minutes=5))
    header = json.loads(_unb64(token.split(".")[0]))
    payload = json.loads(_unb64(token.split(".")[1]))
    assert header == {"alg": "ES256", "typ": "JWT"}
    assert payload["eat_profile"] == EAR_PROFILE
    assert payload["iss"] == "fedtee-test"
    assert payload["exp"] - payload["iat"] == 300
    sub = payload["submods"]["sev-snp"]
    assert sub["ear.status"] == "warning"
    assert sub["ear.trustworthiness-vector"]["hardware"] == 32
    assert verify_ear_jwt(token, KEY.public_key(), now=NOW) == result


def test_ear_jwt_requires_a_p256_key() -> None:
    with pytest.raises(ValueError, match="P-256"):
        _appraise().to_ear_jwt(ec.generate_private_key(ec.SECP384R1()), issuer="x", now=NOW)


def test_ear_jwt_signature_checks() -> None:
    token = _appraise().to_ear_jwt(KEY, issuer="fedtee-test", now=NOW)
    head, body, sig = token.split(".")
    payload = json.loads(_unb64(body))
    payload["submods"]["sev-snp"]["ear.status"] = "affirming"
    payload["submods"]["sev-snp"]["fedtee.result"]["hardware_backed"] = False
    cases = {
        "wrong key": token,
        "edited payload": head + "." + _b64(json.dumps(payload).encode()) + "." + sig,
        "flipped signature bit": head
        + "."
        + body
        + "."
        + _b64(bytes([_unb64(sig)[0] ^ 1]) + _unb64(sig)[1:]),
    }
    for what, candidate in cases.items():
        key = OTHER_KEY if what == "wrong key" else KEY
        with pytest.raises(VerificationError) as err:
            verify_ear_jwt(candidate, key.public_key(), now=NOW)
        assert err.value.reason is Reason.SIGNATURE_INVALID, what


def test_ear_jwt_alg_none_is_refused() -> None:
    token = _appraise().to_ear_jwt(KEY, issuer="fedtee-test", now=NOW)
    _, body, _ = token.split(".")
    unsigned = _b64(b'{"alg":"none","typ":"JWT"}') + "." + body + "."
    with pytest.raises(VerificationError) as err:
        verify_ear_jwt(unsigned, KEY.public_key(), now=NOW)
    assert err.value.reason is Reason.SIGNATURE_INVALID


def test_ear_jwt_time_checks() -> None:
    token = _appraise().to_ear_jwt(KEY, issuer="x", now=NOW, ttl=dt.timedelta(minutes=10))
    assert verify_ear_jwt(token, KEY.public_key(), now=NOW + dt.timedelta(minutes=9)).affirming
    with pytest.raises(VerificationError) as err:
        verify_ear_jwt(token, KEY.public_key(), now=NOW + dt.timedelta(minutes=10))
    assert err.value.reason is Reason.CREDENTIAL_EXPIRED
    with pytest.raises(VerificationError) as err:
        verify_ear_jwt(token, KEY.public_key(), now=NOW - dt.timedelta(hours=1))
    assert "iat" in err.value.message


def test_ear_jwt_profile_and_submodule_are_checked_after_the_signature() -> None:
    good = json.loads(_unb64(_appraise().to_ear_jwt(KEY, issuer="x", now=NOW).split(".")[1]))
    header = {"alg": "ES256", "typ": "JWT"}
    wrong_profile = dict(good, eat_profile="tag:example.com,2020:other")
    two_submods = dict(good, submods={"a": {}, "b": {}})
    no_result = dict(good, submods={"sev-snp": {"ear.status": "affirming"}})
    bad_result = dict(good, submods={"sev-snp": {"fedtee.result": {"status": "great"}}})
    no_exp = {k: v for k, v in good.items() if k != "exp"}
    for payload in (wrong_profile, two_submods, no_result, bad_result, no_exp, [1, 2]):
        with pytest.raises(VerificationError) as err:
            verify_ear_jwt(_sign(header, payload), KEY.public_key(), now=NOW)  # type: ignore[arg-type]
        assert err.value.reason is Reason.EVIDENCE_MALFORMED, payload


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!!.###.$$$", "x" * 70_000, "e30.e30." + _b64(b"\0" * 64)],
)
def test_ear_jwt_malformed_tokens_fail_typed(token: str) -> None:
    with pytest.raises(VerificationError):
        verify_ear_jwt(token, KEY.public_key(), now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_ear_jwt_random_text_raises_only_verification_error(token: str) -> None:
    with pytest.raises(VerificationError):
        verify_ear_jwt(token, KEY.public_key(), now=NOW)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_ear_jwt_any_changed_character_is_rejected(position: int, value: int) -> None:
    token = _appraise().to_ear_jwt(KEY, issuer="x", now=NOW)
    i = position % len(token)
    replacement = chr(value % 128)
    mutated = token[:i] + replacement + token[i + 1 :]
    if mutated == token:
        return
    try:
        back = verify_ear_jwt(mutated, KEY.public_key(), now=NOW)
    except VerificationError:
        return
    # base64url padding bits: a changed last character may decode to the same bytes.
    assert back == verify_ear_jwt(token, KEY.public_key(), now=NOW)
