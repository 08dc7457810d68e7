"""Attestation for the server integration tests: the real sim backend and policy when they are
installed, else a minimal stand-in with the same shapes (a unit seam: these tests are about
the wire, the gate's bookkeeping and the round loop, not about evidence verification).

The stand-in's evidence is JSON {measurement, debug, report_data, platform}; its evaluate
verifies report_data with the real fedtee.attest.binding and appraises measurement and debug.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fedtee.attest.binding import check_report_data
from fedtee.attest.model import (
    _SEAL,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.errors import AttestationError, Reason

REAL = (
    importlib.util.find_spec("fedtee.attest.policy") is not None
    and importlib.util.find_spec("fedtee.attest.attesters.sim") is not None
)


@dataclass(frozen=True)
class _Violation:
    reason: Reason
    field: str
    found: str
    expected: str


@dataclass(frozen=True)
class _Result:
    status: str
    violations: tuple[_Violation, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": self.status,
                "tee": "sim",
                "hardware_backed": False,
                "violations": [v.reason.value for v in self.violations],
            }
        )


@dataclass(frozen=True)
class _Evaluation:
    result: _Result
    verified: VerifiedEvidence | None


@dataclass(frozen=True)
class StandInPolicy:
    measurements: tuple[bytes, ...]


class StandInAttester:
    tee = TeeType.SIM
    report_data_size = 64

    def __init__(self, *, measurement: bytes, platform: bytes, debug: bool = False) -> None:
        self.measurement, self.platform, self.debug = measurement, platform, debug

    def attest(self, report_data: bytes) -> Evidence:
        body = {
            "measurement": self.measurement.hex(),
            "debug": self.debug,
            "report_data": report_data.hex(),
            "platform": self.platform.hex(),
        }
        return Evidence(TeeType.SIM, json.dumps(body).encode())


def stand_in_evaluate(
    evidence: Evidence,
    *,
    policy: Any,
    trust: TrustAnchors,
    collateral: Any,
    now: datetime,
    nonce: bytes | None,
    public_key: bytes | None,
) -> _Evaluation:
    del trust, collateral
    body = json.loads(evidence.data)
    verified = VerifiedEvidence(
        tee=TeeType.SIM,
        report_data=bytes.fromhex(body["report_data"]),
        measurements={"measurement": bytes.fromhex(body["measurement"])},
        debug=body["debug"],
        platform_id=bytes.fromhex(body["platform"]),
        code_identity=bytes.fromhex(body["measurement"]),
        tcb_status=TcbStatus.NOT_APPLICABLE,
        svns={"svn": 1},
        hardware_backed=False,
        claims={},
        verified_at=now,
        seal=_SEAL,
    )
    violations: list[_Violation] = []
    if nonce is not None and public_key is not None:
        try:
            check_report_data(found=verified.report_data, nonce=nonce, public_key=public_key)
        except AttestationError as exc:
            return _Evaluation(
                _Result("contraindicated", (_Violation(exc.reason, "report_data", "", ""),)), None
            )
    if verified.code_identity not in policy.measurements:
        violations.append(
            _Violation(Reason.MEASUREMENT_NOT_ALLOWED, "measurement", body["measurement"], "")
        )
    if verified.debug:
        violations.append(_Violation(Reason.DEBUG_ENABLED, "debug", "true", "false"))
    status = "contraindicated" if violations else "affirming"
    return _Evaluation(_Result(status, tuple(violations)), verified)


@dataclass
class Attestation:
    """What a test needs: trust anchors, a policy, attesters and (for the stand-in) evaluate."""

    trust: TrustAnchors
    evaluate: Any
    _root: Any = None

    def policy(self, measurements: Sequence[bytes]) -> Any:
        if not REAL:
            return StandInPolicy(tuple(measurements))
        policy_mod = importlib.import_module("fedtee.attest.policy")
        refs = ", ".join(f'"{m.hex()}"' for m in measurements)
        text = (
            'version = 1\n[tee.sim]\nallow_simulated = true\ndebug = "forbid"\n'
            'accepted_tcb = ["UpToDate", "NotApplicable"]\n'
            f"[tee.sim.reference]\nmeasurement = [{refs}]\n"
        )
        return policy_mod.Policy.from_toml(text)

    def attester(self, *, measurement: bytes, platform: bytes, debug: bool = False) -> Any:
        if not REAL:
            return StandInAttester(measurement=measurement, platform=platform, debug=debug)
        sim = importlib.import_module("fedtee.attest.attesters.sim")
        plat = sim.SimPlatform.generate(self._root)
        return sim.SimAttester(platform=plat, measurement=measurement, debug=debug, svn=1)


def make_attestation() -> Attestation:
    if not REAL:
        return Attestation(trust=TrustAnchors(), evaluate=stand_in_evaluate)
    sim = importlib.import_module("fedtee.attest.attesters.sim")
    root = sim.SimRoot.generate()
    cert = getattr(root, "certificate", None) or root.cert
    return Attestation(trust=TrustAnchors(roots={TeeType.SIM: (cert,)}), evaluate=None, _root=root)
