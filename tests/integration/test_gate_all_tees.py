"""The enrolment gate admits every evidence type through the same path (issue 3).

For SGX (quote v3), TDX (quote v4), SEV-SNP, PSA and CCA: a real FederationServer on loopback
TLS gRPC issues a challenge; the client builds vendor-format evidence whose user data binds
that nonce and its identity key (``fedtee.attest.binding.report_data``), and enrols. The
evidence comes from the library's testing builders (fake Intel PKI + DCAP collateral, fake
AMD ARK/ASK/VCEK, fake PSA IAK, fake CCA CPAK): real vendor samples cannot bind our nonce.
The server trusts only those fake roots, and SGX/TDX collateral is read from a real offline
bundle directory (DirectoryCollateral), as ``server.toml`` configures it.

Each type also gets negatives through the gate, each asserting its reason code: a
measurement the policy does not list, evidence bound to another key, a signer the server
does not trust, and a second client id on an already enrolled platform.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fedtee import identity
from fedtee.attest.binding import report_data
from fedtee.attest.model import CollateralSource, Evidence, TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.attest.testing.cose import DEFAULT_COMPONENTS, FakeCcaPlatform, FakePsaDevice
from fedtee.attest.testing.dcap import FakeIntelPki, FakePck, make_quote
from fedtee.attest.testing.snp import FakeAmdChain, build_report
from fedtee.attest.trust.collateral import DirectoryCollateral
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.client.transport import Enrolment
from fedtee.errors import Reason

from .conftest import Harness

GOOD = {  # the code identity each policy lists
    "sgx": hashlib.sha256(b"good enclave").digest(),
    "tdx": hashlib.sha384(b"good td").digest(),
    "sev-snp": hashlib.sha384(b"good guest").digest(),
    "psa": hashlib.sha256(b"good secure partition").digest(),
    "cca": hashlib.sha512(b"good realm").digest(),
}
BAD = {name: bytes(len(value)) for name, value in GOOD.items()}

# (user data to put in the evidence, measurement) -> evidence data and aux.
Build = Callable[[bytes, bytes], Evidence]


@dataclass(frozen=True)
class Case:
    tee: TeeType
    size: int  # bytes of the TEE's user-data field that carry the binding
    policy: Policy
    trust: TrustAnchors
    build: Build  # evidence from the trusted (fake) vendor root
    forged: Build  # the same shape, signed by a root the server does not trust
    forged_reason: Reason
    collateral: CollateralSource | None = None


def _policy(table: str, reference: Mapping[str, bytes]) -> Policy:
    refs = "".join(f'"{name}" = ["{value.hex()}"]\n' for name, value in reference.items())
    return Policy.from_toml(f"version = 1\n[tee.{table}]\n[tee.{table}.reference]\n{refs}")


def _bundle(tmp: Path, items: Mapping[tuple[str, str], bytes]) -> DirectoryCollateral:
    """Write collateral as the offline bundle layout <root>/<kind>/<key>."""
    for (kind, key), data in items.items():
        (tmp / kind).mkdir(parents=True, exist_ok=True)
        (tmp / kind / key).write_bytes(data)
    return DirectoryCollateral(tmp)


def _dcap_case(tmp: Path, *, tdx: bool) -> Case:
    now = datetime.now(UTC)  # the fake PKI and collateral are valid around the real clock
    pki, other = FakeIntelPki.generate(now=now), FakeIntelPki.generate(now=now)
    pck, foreign = pki.pck(), other.pck()
    field = "mrtd" if tdx else "mrenclave"
    tee = TeeType.TDX if tdx else TeeType.SGX

    def quote(signer: FakePck, rd: bytes, m: bytes) -> Evidence:
        version = 4 if tdx else 3
        return Evidence(
            tee, make_quote(signer, version=version, tdx=tdx, report_data=rd, body={field: m})
        )

    return Case(
        tee=tee,
        size=64,
        policy=_policy(tee.value, {field: GOOD[tee.value]}),
        trust=TrustAnchors(roots={tee: (pki.root,)}),
        build=lambda rd, m: quote(pck, rd, m),
        forged=lambda rd, m: quote(foreign, rd, m),
        forged_reason=Reason.CHAIN_UNTRUSTED_ROOT,
        collateral=_bundle(tmp / "collateral", pki.collateral(tdx=tdx)),
    )


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _snp_case(tmp: Path) -> Case:
    del tmp
    now = datetime.now(UTC)
    chain = FakeAmdChain.generate(now=now, keys=(_rsa(), _rsa()))
    other = FakeAmdChain.generate(now=now, keys=(_rsa(), _rsa()))

    def report(c: FakeAmdChain, rd: bytes, m: bytes) -> Evidence:
        signed = c.sign(build_report(report_data=rd, measurement=m))
        return Evidence(TeeType.SEV_SNP, signed, {"certs": c.cert_table()})

    return Case(
        tee=TeeType.SEV_SNP,
        size=64,
        policy=_policy("sev-snp", {"measurement": GOOD["sev-snp"]}),
        trust=TrustAnchors(roots={TeeType.SEV_SNP: (chain.ark,)}),
        build=lambda rd, m: report(chain, rd, m),
        forged=lambda rd, m: report(other, rd, m),
        forged_reason=Reason.CHAIN_UNTRUSTED_ROOT,
    )


def _psa_case(tmp: Path) -> Case:
    del tmp
    device, other = FakePsaDevice.generate(), FakePsaDevice.generate()
    bl = DEFAULT_COMPONENTS[0]

    def token(d: FakePsaDevice, nonce: bytes, m: bytes) -> Evidence:
        return Evidence(TeeType.PSA, d.token(nonce=nonce, components=(bl, ("SPE", m))))

    return Case(
        tee=TeeType.PSA,
        size=32,  # the PSA nonce claim: SHA-256 binding
        policy=_policy("psa", {"sw:BL": bl[1], "sw:SPE": GOOD["psa"]}),
        trust=TrustAnchors(keys={TeeType.PSA: (device.public_key,)}),
        build=lambda rd, m: token(device, rd, m),
        forged=lambda rd, m: token(other, rd, m),
        forged_reason=Reason.SIGNATURE_INVALID,
    )


def _cca_case(tmp: Path) -> Case:
    del tmp
    platform, other = FakeCcaPlatform.generate(), FakeCcaPlatform.generate()

    def token(p: FakeCcaPlatform, challenge: bytes, m: bytes) -> Evidence:
        rak = ec.generate_private_key(ec.SECP384R1())
        return Evidence(TeeType.CCA, p.token(challenge=challenge, rak=rak, rim=m))

    return Case(
        tee=TeeType.CCA,
        size=64,  # the realm challenge claim
        policy=_policy("cca", {"rim": GOOD["cca"]}),
        trust=TrustAnchors(keys={TeeType.CCA: (platform.public_key,)}),
        build=lambda rd, m: token(platform, rd, m),
        forged=lambda rd, m: token(other, rd, m),
        forged_reason=Reason.SIGNATURE_INVALID,
    )


CASES: dict[str, Callable[[Path], Case]] = {
    "sgx": lambda tmp: _dcap_case(tmp, tdx=False),
    "tdx": lambda tmp: _dcap_case(tmp, tdx=True),
    "sev-snp": _snp_case,
    "psa": _psa_case,
    "cca": _cca_case,
}


def _enrol(
    transport: GrpcTransport,
    case: Case,
    client_id: str,
    *,
    build: Build | None = None,
    measurement: bytes | None = None,
    bind_key: bytes | None = None,
) -> Enrolment:
    key = identity.public_key_der(identity.generate())
    ch = transport.get_challenge(client_id=client_id, tee=case.tee, aux={})
    rd = report_data(nonce=ch.nonce, public_key=bind_key or key, size=case.size)
    evidence = (build or case.build)(rd, measurement or GOOD[case.tee.value])
    return transport.enroll(client_id=client_id, nonce=ch.nonce, public_key=key, evidence=evidence)


@pytest.mark.parametrize("name", list(CASES))
def test_gate_admits_each_tee_and_rejects_with_reasons(
    harness: Harness, tmp_path: Path, name: str
) -> None:
    case = CASES[name](tmp_path)
    server = harness.start(policy=case.policy, trust=case.trust, collateral=case.collateral)
    assert harness.ca is not None
    transport = GrpcTransport.connect(
        address=f"127.0.0.1:{server.port}", ca_pem=harness.ca.cert_pem, server_name="localhost"
    )
    try:
        ok = _enrol(transport, case, "c-ok")
        assert ok.accepted, ok
        assert ok.credential
        result = json.loads(ok.attestation_result_json)
        assert result["tee"] == case.tee.value
        assert result["hardware_backed"] is True
        assert result["status"] == "affirming"
        assert result["violations"] == []

        other_key = identity.public_key_der(identity.generate())
        rejected = {
            "measurement": _enrol(transport, case, "c-bad-code", measurement=BAD[name]),
            "other key": _enrol(transport, case, "c-other-key", bind_key=other_key),
            "forged": _enrol(transport, case, "c-forged", build=case.forged),
            "same platform": _enrol(transport, case, "c-twin"),
        }
    finally:
        transport.close()
    expected = {
        "measurement": Reason.MEASUREMENT_NOT_ALLOWED,
        "other key": Reason.REPORT_DATA_MISMATCH,
        "forged": case.forged_reason,
        "same platform": Reason.PLATFORM_ALREADY_ENROLLED,
    }
    assert {k: (v.accepted, v.reason) for k, v in rejected.items()} == {
        k: (False, r.value) for k, r in expected.items()
    }
    recorded = {(r.client_id, r.reason) for r in server.store.rejections("fed-it")}
    assert ("c-bad-code", Reason.MEASUREMENT_NOT_ALLOWED.value) in recorded
    assert ("c-forged", case.forged_reason.value) in recorded
