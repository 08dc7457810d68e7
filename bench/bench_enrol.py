"""Evidence generation on a real software TPM (swtpm) and enrolment latency over real gRPC.

What it measures, per phase, as the median of several repeats:

- TPM (swtpm with an EK certificate from swtpm's local CA, through tpm2-pytss):
  provisioning a TPM (swtpm_setup), opening the attester (EK read, AK creation),
  credential activation, extending the code PCR, and making a quote bound to report_data;
  the evidence size.
- Enrolment latency over loopback TLS gRPC against a real FederationServer (SQLite state,
  ledger): GetChallenge, evidence, Enroll, for the sim TEE and for the TPM. The server
  verifies and appraises the evidence with the real verifiers and policy engine.

swtpm is a software TPM: a discrete TPM is slower (its RSA and ECC operations run on a
small security chip), so the TPM figures here are a lower bound for hardware.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as common
import numpy as np

from fedtee import identity, tensors
from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.binding import report_data
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.client.grpc_transport import GrpcTransport
from fedtee.server.app import FederationServer, ServerConfig
from fedtee.wire import tls

CODE = b"\x5a" * 48


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = common.monotonic()
    out = fn()
    return (common.monotonic() - t0) * 1000.0, out


class _Server:
    """A real server on loopback with the given policy and trust, in a temp state dir."""

    def __init__(self, tmp: Path, policy: Policy, trust: TrustAnchors, offset: timedelta) -> None:
        now = datetime.now(UTC)
        self.ca = tls.make_ca(name="bench CA", now=now)
        cert = tls.make_server_cert(self.ca, now=now)
        model = tensors.encode({"w": np.zeros((4,), dtype=np.float32)})
        config = ServerConfig(
            federation_id="bench-enrol",
            address="127.0.0.1:0",
            tls_cert_pem=cert.cert_pem,
            tls_key_pem=cert.key_pem,
            state_dir=tmp / "state",
            policy=policy,
            trust=trust,
            initial_model=model,
        )
        self.server = FederationServer(config, clock=lambda: datetime.now(UTC) + offset)
        self.server.start()
        self.transport = GrpcTransport.connect(
            address=f"127.0.0.1:{self.server.port}", ca_pem=self.ca.cert_pem,
            server_name="localhost",
        )  # fmt: skip

    def close(self) -> None:
        self.transport.close()
        self.server.stop(grace_s=0.2)


def _sim_rows(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    root = SimRoot.generate()
    measurement = bytes(48)
    policy = Policy.from_toml(
        'version = 1\n[tee.sim]\nallow_simulated = true\ndebug = "forbid"\n'
        'accepted_tcb = ["UpToDate", "NotApplicable"]\n'
        f'[tee.sim.reference]\nmeasurement = ["{measurement.hex()}"]\n'
    )
    attester = SimAttester(
        platform=SimPlatform.generate(root), measurement=measurement, debug=False, svn=1
    )
    srv = _Server(tmp, policy, TrustAnchors(roots={TeeType.SIM: (root.certificate,)}),
                  timedelta())  # fmt: skip
    gen, enrol, size = [], [], 0
    try:
        for _ in range(repeats):
            key = identity.public_key_der(identity.generate())
            t0 = common.monotonic()
            ch = srv.transport.get_challenge(client_id="sim-1", tee=TeeType.SIM, aux={})
            ms, evidence = _timed(
                lambda: attester.attest(report_data(nonce=ch.nonce, public_key=key, size=64))  # noqa: B023
            )
            out = srv.transport.enroll(
                client_id="sim-1", nonce=ch.nonce, public_key=key, evidence=evidence
            )
            total = (common.monotonic() - t0) * 1000.0
            if not out.accepted:
                raise SystemExit(f"sim enrolment refused: {out.reason} {out.message}")
            gen.append(ms)
            enrol.append(total)
            size = len(evidence.data) + sum(len(v) for v in evidence.aux.values())
    finally:
        srv.close()
    return [
        {"tee": "sim", "phase": "evidence (attest)", "median_ms": common.median(gen),
         "repeats": repeats, "evidence_bytes": size},
        {"tee": "sim", "phase": "enrolment (challenge + evidence + enroll)",
         "median_ms": common.median(enrol), "repeats": repeats, "evidence_bytes": size},
    ]  # fmt: skip


def _tpm_rows(tmp: Path, repeats: int) -> list[dict[str, Any]]:
    from cryptography import x509

    from fedtee.attest.attesters.tpm import TpmAttester
    from fedtee.attest.testing.tpm import Swtpm, swtpm_missing
    from fedtee.attest.verify.tpm import CODE_PCR, code_pcr_value

    why = swtpm_missing()
    if why is not None:
        return [{"tee": "tpm", "phase": "skipped", "median_ms": None, "repeats": 0,
                 "evidence_bytes": None, "note": why}]  # fmt: skip
    ca_dir = tmp / "ekca"
    provision: list[float] = []
    tpms = []
    try:
        for _ in range(2 if repeats < 5 else 3):
            ms, t = _timed(lambda: Swtpm.provision(ca_dir=ca_dir))
            provision.append(ms)
            tpms.append(t)
        tpm = tpms[0].start()
        opened: list[float] = []
        for _ in range(max(2, repeats // 3)):
            ms, att = _timed(lambda: TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()))
            opened.append(ms)
            att.close()
        with TpmAttester(tcti=tpm.tcti, ek_chain=tpm.ca_issuer_pem()) as client:
            ek = x509.load_der_x509_certificate(client.challenge_request()["ek_cert"])
            offset = ek.not_valid_before_utc + timedelta(days=1) - datetime.now(UTC)
            policy = Policy.from_toml(
                'version = 1\n[tee.tpm]\naccepted_tcb = ["UpToDate", "NotApplicable"]\n'
                f'[tee.tpm.reference]\npcr{CODE_PCR} = ["{code_pcr_value(CODE).hex()}"]\n'
            )
            srv = _Server(tmp / "srv", policy,
                          TrustAnchors(roots={TeeType.TPM: (tpm.ca_root(),)}), offset)  # fmt: skip
            activate, extend, quote, enrol, size = [], [], [], [], 0
            try:
                for _ in range(repeats):
                    key = identity.public_key_der(identity.generate())
                    t0 = common.monotonic()
                    ch = srv.transport.get_challenge(
                        client_id="tpm-1", tee=TeeType.TPM, aux=client.challenge_request()
                    )
                    ms, _ = _timed(lambda: client.activate(ch.aux))  # noqa: B023
                    activate.append(ms)
                    ms, _ = _timed(lambda: client.extend_code_pcr(CODE))
                    extend.append(ms)
                    rd = report_data(nonce=ch.nonce, public_key=key, size=32)
                    ms, evidence = _timed(lambda: client.attest(rd))  # noqa: B023
                    quote.append(ms)
                    out = srv.transport.enroll(
                        client_id="tpm-1", nonce=ch.nonce, public_key=key, evidence=evidence
                    )
                    enrol.append((common.monotonic() - t0) * 1000.0)
                    if not out.accepted:
                        raise SystemExit(f"TPM enrolment refused: {out.reason} {out.message}")
                    size = len(evidence.data) + sum(len(v) for v in evidence.aux.values())
            finally:
                srv.close()
    finally:
        for t in tpms:
            t.close()
    row = {"tee": "tpm", "repeats": repeats, "evidence_bytes": size}
    return [
        {**row, "phase": "provision (swtpm_setup + EK cert)", "median_ms":
         common.median(provision), "repeats": len(provision)},
        {**row, "phase": "open attester (EK read + AK create)", "median_ms":
         common.median(opened), "repeats": len(opened)},
        {**row, "phase": "credential activation", "median_ms": common.median(activate)},
        {**row, "phase": "extend code PCR", "median_ms": common.median(extend)},
        {**row, "phase": "evidence (quote + PCR read)", "median_ms": common.median(quote)},
        {**row, "phase": "enrolment (challenge + activation + evidence + enroll)",
         "median_ms": common.median(enrol)},
    ]  # fmt: skip


def _doc(rows: list[dict[str, Any]], command: str, info: dict[str, Any]) -> str:
    lines = [
        common.header(command, info),
        "- Real server (SQLite state, ledger, real verifiers and policy) and client over "
        "loopback TLS gRPC; median of the repeats shown. swtpm is a software TPM: a discrete "
        "TPM is slower, so TPM figures are a lower bound for hardware.",
        "",
        common.table(
            ["TEE", "phase", "median (ms)", "repeats", "evidence bytes"],
            (
                [
                    r["tee"],
                    r["phase"],
                    "-" if r["median_ms"] is None else f"{r['median_ms']:,.1f}",
                    r["repeats"],
                    r["evidence_bytes"] or "-",
                ]
                for r in rows
            ),
            "llrrr",
        ),
    ]
    skipped = [r for r in rows if r.get("note")]
    if skipped:
        lines += ["", f"TPM skipped: {skipped[0]['note']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = common.parser(__doc__).parse_args(argv)
    repeats = 5 if args.quick else 20
    info = common.machine_info()
    command = common.command_line()
    tmp = Path(tempfile.mkdtemp(prefix="fedtee-bench-enrol-"))
    try:
        rows = _sim_rows(tmp / "sim", repeats) + _tpm_rows(tmp / "tpm", repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'TEE':5} {'phase':55} {'median ms':>10} {'bytes':>7}")
    for r in rows:
        ms = "-" if r["median_ms"] is None else f"{r['median_ms']:.1f}"
        print(f"{r['tee']:5} {r['phase']:55} {ms:>10} {r['evidence_bytes'] or '-':>7}")
    if args.json:
        common.write_json(args.json, "enrol", rows, quick=args.quick, machine=info,
                          command=command)  # fmt: skip
    if not args.no_doc:
        common.write_doc_section(
            "enrol", _doc(rows, command, info),
            title="Enrolment latency and TPM evidence generation",
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
