"""Every attack scenario against a real server (loopback TLS gRPC, SQLite, ledger): refused
with exactly its expected reason, the honest clients' round aggregated, the refusal in the
ledger. The contrast runs check a few scenarios against the insecure evaluation server."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.errors import Reason
from fedtee.eval import attacks

# Scenarios that wait out a round deadline or a nonce lifetime, or start a software TPM.
_SLOW = {
    "receipt-earlier-round",
    "stalled-stream",
    "stalled-before-header",
    "oversized-message",
    "replayed-evidence",
    "downgrade-to-sim",
}


def _param(s: attacks.Scenario) -> object:
    marks = [pytest.mark.slow] if s.id in _SLOW else []
    if s.settings.honest_tee.value == "tpm":
        from fedtee.attest.swtpm import swtpm_missing

        why = swtpm_missing()
        marks.append(pytest.mark.skipif(why is not None, reason=f"swtpm unavailable: {why}"))
    return pytest.param(s, id=s.id, marks=marks)


@pytest.mark.parametrize("scenario", [_param(s) for s in attacks.SCENARIOS])
def test_attack_is_refused_and_the_honest_round_completes(
    scenario: attacks.Scenario, tmp_path: Path
) -> None:
    run = attacks.run_scenario(scenario, workdir=tmp_path)
    assert not run.observed.accepted, run
    assert run.observed.reason == scenario.expected.value, run
    assert run.honest_ok, run.detail
    assert scenario.expected.value in run.ledger_reasons, run.ledger_reasons
    assert run.detail == ""


def test_every_issue_scenario_exists() -> None:
    ids = set(attacks.SCENARIO_IDS)
    assert len(ids) == len(attacks.SCENARIOS)  # unique
    assert {
        "impersonation-no-evidence",
        "forged-evidence-signature",
        "untrusted-root",
        "modified-code",
        "debug-enclave",
        "tcb-below-minimum",
        "replayed-evidence",
        "relayed-evidence",
        "nonce-reuse",
        "credential-expired",
        "credential-stolen",
        "sybil",
        "downgrade-to-sim",
        "tampered-update",
        "receipt-earlier-round",
        "receipt-wrong-model",
        "update-nan",
        "update-inf",
        "update-wrong-shape",
        "update-norm-exceeded",
        "oversized-message",
        "bomb-declared-size",
        "bomb-safetensors-header",
        "malformed-protobuf",
        "pickle-payload",
        "stalled-stream",
    } <= ids


@pytest.mark.parametrize(
    ("scenario_id", "without"),
    [
        # Stopped only by attestation or receipts: the insecure server takes them.
        ("forged-evidence-signature", "accepted"),
        ("sybil", "accepted"),
        ("tampered-update", "accepted"),
        ("receipt-earlier-round", "accepted"),
        # Stopped by checks that need no TEE.
        ("update-nan", f"rejected:{Reason.UPDATE_NONFINITE.value}"),
        ("credential-stolen", f"rejected:{Reason.CREDENTIAL_INVALID.value}"),
    ],
)
def test_contrast_without_attestation(scenario_id: str, without: str, tmp_path: Path) -> None:
    (scenario,) = attacks.select([scenario_id])
    run = attacks.run_scenario(scenario, insecure=True, workdir=tmp_path)
    assert run.observed.label() == without, run


def test_the_pickle_payload_is_live_and_was_never_unpickled(tmp_path: Path) -> None:
    # The payload really creates its marker when unpickled (here, by the test, on purpose),
    # so the scenario's "no marker" check can fail.
    import pickle

    marker = tmp_path / "created-by-unpickling"
    handle = pickle.loads(attacks.pickle_creating(marker))  # our own payload, on purpose
    handle.close()
    assert marker.exists()
    (scenario,) = attacks.select(["pickle-payload"])
    run = attacks.run_scenario(scenario, workdir=tmp_path)
    assert (run.observed.accepted, run.observed.reason) == (False, Reason.UPDATE_MALFORMED.value)
    assert not list(tmp_path.rglob("UNPICKLED"))


def test_select_refuses_unknown_ids() -> None:
    with pytest.raises(KeyError):
        attacks.select(["no-such-attack"])
    assert [s.id for s in attacks.select(["sybil", "nonce-reuse"])] == ["nonce-reuse", "sybil"]
