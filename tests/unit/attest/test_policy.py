import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.binding import report_data
from fedtee.attest.model import _SEAL, TcbStatus, TeeType, TrustAnchors, VerifiedEvidence
from fedtee.attest.policy import Policy, Status, appraise, evaluate
from fedtee.attest.result import AttestationResult, verify_ear_jwt
from fedtee.errors import PolicyError, Reason, VerificationError

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
MRENCLAVE = bytes.fromhex("8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68")

SGX_POLICY = f"""
version = 1
[tee.sgx]
debug = "forbid"
accepted_tcb = ["UpToDate"]
warn_tcb = ["SWHardeningNeeded"]
max_evidence_age_s = 60
[tee.sgx.reference]
mrenclave = ["{MRENCLAVE.hex()}"]
[tee.sgx.min_svn]
isv_svn = 2
"""


def _verified(**overrides: object) -> VerifiedEvidence:
    fields: dict[str, object] = {
        "tee": TeeType.SGX,
        "report_data": bytes(64),
        "measurements": {"mrenclave": MRENCLAVE, "mrsigner": bytes(32)},
        "debug": False,
        "platform_id": b"p" * 16,
        "code_identity": MRENCLAVE,
        "tcb_status": TcbStatus.UP_TO_DATE,
        "svns": {"isv_svn": 2},
        "hardware_backed": True,
        "claims": {},
        "verified_at": NOW,
        "produced_at": NOW,
        "seal": _SEAL,
    }
    fields.update(overrides)
    return VerifiedEvidence(**fields)  # type: ignore[arg-type]


def test_affirming_when_everything_matches() -> None:
    result = appraise(_verified(), Policy.from_toml(SGX_POLICY), now=NOW)
    assert result.status is Status.AFFIRMING
    assert result.violations == ()
    assert result.trust_vector["executables"] == 2


def test_every_violation_is_reported_at_once() -> None:
    bad = _verified(
        debug=True,
        measurements={"mrenclave": bytes(32)},
        svns={"isv_svn": 1},
        tcb_status=TcbStatus.OUT_OF_DATE,
        produced_at=NOW - dt.timedelta(minutes=5),
    )
    result = appraise(bad, Policy.from_toml(SGX_POLICY), now=NOW)
    assert result.status is Status.CONTRAINDICATED
    assert set(result.reasons) == {
        Reason.DEBUG_ENABLED,
        Reason.MEASUREMENT_NOT_ALLOWED,
        Reason.SVN_BELOW_MINIMUM,
        Reason.TCB_BELOW_MINIMUM,
        Reason.EVIDENCE_TOO_OLD,
    }
    mr = next(v for v in result.violations if v.reason is Reason.MEASUREMENT_NOT_ALLOWED)
    assert mr.found == bytes(32).hex() and MRENCLAVE.hex() in mr.expected


def test_reference_names_match_mixed_case_measurements() -> None:
    # PSA/CCA verifiers name components "sw:BL"; policy names are lowercased on load.
    policy = Policy.from_toml(
        f'version = 1\n[tee.psa.reference]\n"sw:BL" = ["{MRENCLAVE.hex()}"]\n'
    )
    psa = {"tee": TeeType.PSA, "tcb_status": TcbStatus.NOT_APPLICABLE, "svns": {}}
    ok = appraise(_verified(measurements={"sw:BL": MRENCLAVE}, **psa), policy, now=NOW)
    assert ok.status is Status.AFFIRMING, ok.violations
    # Two names equal but for case: both values must be allowed (fail closed).
    twin = _verified(measurements={"sw:BL": MRENCLAVE, "sw:bl": bytes(32)}, **psa)
    assert appraise(twin, policy, now=NOW).reasons == (Reason.MEASUREMENT_NOT_ALLOWED,)


def test_warn_tcb_gives_warning() -> None:
    result = appraise(
        _verified(tcb_status=TcbStatus.SW_HARDENING_NEEDED), Policy.from_toml(SGX_POLICY), now=NOW
    )
    assert result.status is Status.WARNING and result.accepted


@pytest.mark.parametrize(
    ("status", "reason"),
    [(TcbStatus.UNSUPPORTED, Reason.TCB_UNSUPPORTED), (TcbStatus.REVOKED, Reason.TCB_REVOKED)],
)
def test_unsupported_and_revoked_never_pass(status: TcbStatus, reason: Reason) -> None:
    result = appraise(_verified(tcb_status=status), Policy.unsafe_allow_all(), now=NOW)
    assert result.reasons == (reason,)


def test_tee_not_in_policy() -> None:
    result = appraise(_verified(tee=TeeType.TDX), Policy.from_toml(SGX_POLICY), now=NOW)
    assert result.reasons == (Reason.TEE_NOT_ALLOWED,)


def test_missing_claim_is_a_violation() -> None:
    result = appraise(_verified(measurements={}), Policy.from_toml(SGX_POLICY), now=NOW)
    assert Reason.CLAIM_MISSING in result.reasons


def test_sim_needs_explicit_allow() -> None:
    sim = _verified(
        tee=TeeType.SIM,
        hardware_backed=False,
        tcb_status=TcbStatus.NOT_APPLICABLE,
        measurements={},
        svns={},
    )
    denied = appraise(sim, Policy.from_toml("version = 1\n[tee.sim]\n"), now=NOW)
    assert denied.reasons == (Reason.SIM_NOT_ALLOWED,)
    allowed = appraise(
        sim, Policy.from_toml("version = 1\n[tee.sim]\nallow_simulated = true\n"), now=NOW
    )
    # Simulated evidence is accepted only as a warning, never as plain affirming.
    assert allowed.status is Status.WARNING and allowed.hardware_backed is False


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("version = 1\n", Reason.POLICY_EMPTY),
        ("version = 2\n[tee.sgx]\n", Reason.POLICY_INVALID),
        ("version = 1\n[tee.sgx]\nmrenclave = []\n", Reason.POLICY_INVALID),
        ("version = 1\n[tee.nope]\n", Reason.POLICY_INVALID),
        ('version = 1\n[tee.sgx.reference]\nmrenclave = ["zz"]\n', Reason.POLICY_INVALID),
        ('version = 1\n[tee.sgx]\naccepted_tcb = ["Revoked"]\n', Reason.POLICY_INVALID),
        ("version = 1\n[tee.sgx]\nallow_simulated = true\n", Reason.POLICY_INVALID),
        ("version = 1\nextra = 1\n[tee.sgx]\n", Reason.POLICY_INVALID),
        ("not toml [", Reason.POLICY_INVALID),
        ("version = true\n[tee.sgx]\n", Reason.POLICY_INVALID),
        ('version = 1\n[tee.sgx.reference]\nmrenclave = [""]\n', Reason.POLICY_INVALID),
        (
            'version = 1\n[tee.sgx.reference]\nmrenclave = ["00"]\nMRENCLAVE = ["01"]\n',
            Reason.POLICY_INVALID,
        ),
        ('version = 1\n[tee.sgx]\ndebug = "maybe"\n', Reason.POLICY_INVALID),
        ("version = 1\n[tee.sgx]\nmax_evidence_age_s = 0\n", Reason.POLICY_INVALID),
        ("version = 1\n[tee.sgx.min_svn]\nisv_svn = -1\n", Reason.POLICY_INVALID),
        ('version = 1\n[tee.sgx]\nwarn_tcb = ["Sometimes"]\n', Reason.POLICY_INVALID),
        ("version = 1\ntee = 3\n", Reason.POLICY_INVALID),
        ('version = 1\n[tee.tpm]\non_reset = "ignore"\n', Reason.POLICY_INVALID),
        ("version = 1\n[tee.tpm]\non_reset = true\n", Reason.POLICY_INVALID),
        ('version = 1\n[tee.sgx]\non_reset = "reenrol"\n', Reason.POLICY_INVALID),
    ],
)
def test_bad_policies_fail_closed(text: str, reason: Reason) -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_toml(text)
    assert err.value.reason is reason


def test_on_reset_is_a_tpm_key_that_defaults_to_reject() -> None:
    default = Policy.from_toml('version = 1\n[tee.tpm]\naccepted_tcb = ["NotApplicable"]\n')
    assert default.tees[TeeType.TPM].on_reset == "reject"
    reenrol = Policy.from_toml('version = 1\n[tee.tpm]\non_reset = "reenrol"\n')
    assert reenrol.tees[TeeType.TPM].on_reset == "reenrol"
    with pytest.raises(PolicyError) as err:
        Policy.from_toml('version = 1\n[tee.sev-snp]\non_reset = "reject"\n')
    assert "on_reset" in err.value.message


def test_unknown_key_is_named_in_the_error() -> None:
    with pytest.raises(PolicyError) as err:
        Policy.from_toml("version = 1\n[tee.sgx]\nmax_age = 3\n")
    assert "max_age" in err.value.message and "[tee.sgx]" in err.value.message


_TOML_SCALARS = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.text(max_size=20),
    st.sampled_from(["UpToDate", "OutOfDate", "Revoked", "allow", "forbid", "reenrol", "ab" * 24]),
)
_TOML_VALUES = st.recursive(
    _TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["reference", "min_svn", "debug", "warn_tcb", "mrenclave", "x"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["version", "tee", "other"]),
        st.one_of(
            _TOML_VALUES,
            st.dictionaries(
                st.sampled_from([t.value for t in TeeType] + ["nope"]),
                st.dictionaries(
                    st.sampled_from(
                        [
                            "allow_simulated",
                            "debug",
                            "accepted_tcb",
                            "warn_tcb",
                            "max_evidence_age_s",
                            "reference",
                            "min_svn",
                            "on_reset",
                            "bogus",
                        ]
                    ),
                    _TOML_VALUES,
                    max_size=5,
                ),
                max_size=3,
            ),
        ),
        max_size=3,
    )
)
def test_policy_parser_raises_only_policy_error(raw: dict[str, object]) -> None:
    try:
        policy = Policy.from_dict(raw)
    except PolicyError:
        return
    assert policy.tees  # a policy that parsed accepts at least one TEE type


def test_unsafe_policy_marks_results(caplog: pytest.LogCaptureFixture) -> None:
    policy = Policy.unsafe_allow_all()
    assert "UNSAFE" in caplog.text
    result = appraise(_verified(debug=True), policy, now=NOW)
    assert result.status is Status.WARNING and result.policy_unsafe


def test_appraise_refuses_unverified_evidence() -> None:
    with pytest.raises(TypeError):
        appraise(object(), Policy.from_toml(SGX_POLICY), now=NOW)  # type: ignore[arg-type]


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise AssertionError


def test_evaluate_checks_binding_and_turns_errors_into_results() -> None:
    root = SimRoot.generate()
    trust = TrustAnchors(roots={TeeType.SIM: (root.cert,)})
    measurement = b"m" * 48
    policy = Policy.from_toml(
        f"version = 1\n[tee.sim]\nallow_simulated = true\n[tee.sim.reference]\n"
        f'measurement = ["{measurement.hex()}"]\n'
    )
    nonce, key = b"n" * 32, b"k" * 91
    evidence = SimAttester(platform=SimPlatform.generate(root), measurement=measurement).attest(
        report_data(nonce=nonce, public_key=key)
    )
    ok = evaluate(
        evidence,
        policy=policy,
        trust=trust,
        collateral=_NoCollateral(),
        now=NOW,
        nonce=nonce,
        public_key=key,
    )
    assert ok.result.accepted and ok.verified is not None
    wrong_key = evaluate(
        evidence,
        policy=policy,
        trust=trust,
        collateral=_NoCollateral(),
        now=NOW,
        nonce=nonce,
        public_key=b"x" * 91,
    )
    assert wrong_key.result.reasons == (Reason.REPORT_DATA_MISMATCH,)
    untrusted = evaluate(
        evidence, policy=policy, trust=TrustAnchors(), collateral=_NoCollateral(), now=NOW
    )
    assert untrusted.result.reasons == (Reason.CHAIN_UNTRUSTED_ROOT,)
    not_in_policy = evaluate(
        evidence,
        policy=Policy.from_toml("version = 1\n[tee.sgx]\n"),
        trust=trust,
        collateral=_NoCollateral(),
        now=NOW,
    )
    assert not_in_policy.result.reasons == (Reason.TEE_NOT_ALLOWED,)


def test_result_json_and_ear_jwt_round_trip() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    result = appraise(_verified(debug=True), Policy.from_toml(SGX_POLICY), now=NOW)
    assert AttestationResult.from_json(result.to_json()) == result
    key = ec.generate_private_key(ec.SECP256R1())
    token = result.to_ear_jwt(key, issuer="fedtee-test", now=NOW)
    back = verify_ear_jwt(token, key.public_key(), now=NOW + dt.timedelta(minutes=1))
    assert back.reasons == result.reasons and back.status is Status.CONTRAINDICATED
    with pytest.raises(VerificationError) as expired:
        verify_ear_jwt(token, key.public_key(), now=NOW + dt.timedelta(hours=1))
    assert expired.value.reason is Reason.CREDENTIAL_EXPIRED
    head, body, sig = token.split(".")
    forged = head + "." + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + sig
    with pytest.raises(VerificationError):
        verify_ear_jwt(forged, key.public_key(), now=NOW)
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(VerificationError) as wrong:
        verify_ear_jwt(token, other.public_key(), now=NOW)
    assert wrong.value.reason is Reason.SIGNATURE_INVALID


def test_evaluate_refuses_half_a_binding() -> None:
    root = SimRoot.generate()
    evidence = SimAttester(platform=SimPlatform.generate(root), measurement=b"m" * 48).attest(
        bytes(64)
    )
    policy = Policy.from_toml("version = 1\n[tee.sim]\nallow_simulated = true\n")
    trust = TrustAnchors(roots={TeeType.SIM: (root.cert,)})
    for nonce, key in ((b"n" * 32, None), (None, b"k" * 91)):
        with pytest.raises(ValueError, match="both"):
            evaluate(
                evidence,
                policy=policy,
                trust=trust,
                collateral=_NoCollateral(),
                now=NOW,
                nonce=nonce,
                public_key=key,
            )


def test_evaluate_turns_a_missing_backend_into_a_typed_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fedtee.attest import registry

    monkeypatch.setitem(registry._VERIFIERS, TeeType.SIM, "fedtee.attest.verify.no_such:X")
    root = SimRoot.generate()
    evidence = SimAttester(platform=SimPlatform.generate(root), measurement=b"m" * 48).attest(
        bytes(64)
    )
    evaluation = evaluate(
        evidence,
        policy=Policy.from_toml("version = 1\n[tee.sim]\nallow_simulated = true\n"),
        trust=TrustAnchors(roots={TeeType.SIM: (root.cert,)}),
        collateral=_NoCollateral(),
        now=NOW,
    )
    assert evaluation.verified is None
    assert evaluation.result.status is Status.CONTRAINDICATED
    assert evaluation.result.reasons == (Reason.EVIDENCE_TYPE_UNKNOWN,)
