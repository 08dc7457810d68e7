"""Attestation for the server integration tests: the real sim TEE (root, platforms,
attesters) and the real policy engine; the server calls fedtee.attest.policy.evaluate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy


@dataclass
class Attestation:
    root: SimRoot
    trust: TrustAnchors
    evaluate: None = None  # the server's default: fedtee.attest.policy.evaluate

    def policy(self, measurements: Sequence[bytes]) -> Policy:
        refs = ", ".join(f'"{m.hex()}"' for m in measurements)
        return Policy.from_toml(
            'version = 1\n[tee.sim]\nallow_simulated = true\ndebug = "forbid"\n'
            'accepted_tcb = ["UpToDate", "NotApplicable"]\n'
            f"[tee.sim.reference]\nmeasurement = [{refs}]\n"
        )

    def attester(self, *, measurement: bytes, platform: bytes, debug: bool = False) -> SimAttester:
        del platform  # each sim platform has its own certified key, hence its own platform id
        return SimAttester(
            platform=SimPlatform.generate(self.root), measurement=measurement, debug=debug, svn=1
        )


def make_attestation() -> Attestation:
    root = SimRoot.generate()
    return Attestation(root=root, trust=TrustAnchors(roots={TeeType.SIM: (root.certificate,)}))
