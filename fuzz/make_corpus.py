"""(Re)build the seed corpora in fuzz/corpus/<target>/ from tests/data and fedtee's encoders.

Run from the repository root: ``.venv/bin/python fuzz/make_corpus.py``. Real vendor vectors
are copied byte for byte from tests/data (their provenance is in tests/data/<tee>/PROVENANCE.md
and summarised in fuzz/corpus/PROVENANCE.md); formats fedtee defines itself (sim reports,
receipts, ledgers, protobuf messages, safetensors, policies) are produced by fedtee's own
writers, so each seed is a valid input the fuzzer starts mutating from.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec

from fedtee import identity
from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.evidence import snp
from fedtee.attest.model import Evidence, TeeType
from fedtee.attest.result import AttestationResult, Status
from fedtee.attest.testing.tpm import tpmt_public_ecc
from fedtee.ledger.log import LedgerWriter
from fedtee.ledger.receipts import Receipt, SignedReceipt, receipt_hash, sign_receipt
from fedtee.server.credentials import CredentialAuthority
from fedtee.tensors import encode_pure
from fedtee.wire import auth, serde
from fedtee.wire.messages import (
    Challenge,
    ChallengeRequest,
    EnrollRequest,
    Task,
    TaskKind,
    UpdateHeader,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import targets  # the fixed credential key lives there

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
CORPUS = ROOT / "fuzz" / "corpus"
NOW_MS = 1_700_000_000_000

# target -> files copied from tests/data
VECTORS: dict[str, tuple[str, ...]] = {
    "dcap": (
        "sgx/occlum_quote_v3.dat",
        "tdx/tdx_prod_quote_SPR_E4.dat",
        "tdx/quote_v5_sample.dat",
    ),
    "sgx": ("sgx/occlum_quote_v3.dat",),
    "tdx": ("tdx/tdx_prod_quote_SPR_E4.dat", "tdx/quote_v5_sample.dat"),
    "snp": ("sev-snp/attestation.bin",),
    "tpm": ("tpm/azure_vtpm_quote.json",),
    "cose": ("psa/psa-2_0_0_sign1.bin", "psa/psa-iot-1_sign1.bin"),
    "psa": ("psa/psa-2_0_0_sign1.bin", "psa/psa-iot-1_sign1.bin"),
    "cca": ("cca/cca-example-token.cbor",),
}

# The go-tdx-guest file carries 39 bytes of padding after the quote (tests/data/tdx/
# PROVENANCE.md); the seed is the quote itself, as tests/unit/attest/test_tdx.py uses it.
TRIM: dict[str, int] = {"tdx/tdx_prod_quote_SPR_E4.dat": 4935}

POLICY = """\
version = 1
[tee.sim]
allow_simulated = true
debug = "forbid"
accepted_tcb = ["UpToDate"]
warn_tcb = ["SWHardeningNeeded"]
max_evidence_age_s = 300
[tee.sim.reference]
measurement = ["{m}"]
[tee.sim.min_svn]
svn = 1
[tee.sgx]
accepted_tcb = ["UpToDate"]
[tee.sgx.reference]
mrenclave = ["{m32}"]
"""


def _receipt(key: identity.PrivateKey, client: str) -> tuple[Receipt, bytes, bytes]:
    r = Receipt(
        federation_id="fed-fuzz",
        round=1,
        client_id=client,
        global_model_digest=b"\x01" * 32,
        update_digest=b"\x02" * 32,
        num_examples=10,
        measurement=b"\xab" * 48,
        metrics={"loss": 0.25},
        created_unix_ms=NOW_MS,
    )
    signed = sign_receipt(r, key)
    return r, signed.receipt, signed.signature


def _ledger() -> bytes:
    server = identity.generate()
    client = identity.generate()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.jsonl"
        w = LedgerWriter.create(path, federation_id="fed-fuzz", server_key=server, now_ms=NOW_MS)
        w.enrolment(
            client_id="c1",
            public_key=identity.public_key_der(client),
            tee="sim",
            hardware_backed=False,
            attestation_json=json.dumps({"status": "affirming"}),
            now_ms=NOW_MS,
        )
        r = Receipt(
            federation_id="fed-fuzz",
            round=1,
            client_id="c1",
            global_model_digest=b"\x01" * 32,
            update_digest=b"\x02" * 32,
            num_examples=10,
            measurement=b"\xab" * 48,
            metrics={"loss": 0.25},
            created_unix_ms=NOW_MS,
        )
        signed = sign_receipt(r, client)
        w.receipt(client_id="c1", round=1, signed=signed, accepted=True, now_ms=NOW_MS)
        w.aggregation(
            round=1,
            inputs=[receipt_hash(signed)],
            input_model_digest=b"\x01" * 32,
            output_model_digest=b"\x03" * 32,
            strategy="fedavg",
            now_ms=NOW_MS,
        )
        w.checkpoint(now_ms=NOW_MS)
        return path.read_bytes()


def generated() -> dict[str, dict[str, bytes]]:
    """Seeds for the formats fedtee writes itself (name -> file name -> bytes)."""
    root = SimRoot.generate()
    platform = SimPlatform.generate(root)
    sim_ev = SimAttester(platform=platform, measurement=b"\x5a" * 48).attest(b"\x11" * 64)

    vcek = (DATA / "sev-snp" / "vcek.der").read_bytes()
    table = snp.build_cert_table({"vcek": vcek})
    report = (DATA / "sev-snp" / "attestation.bin").read_bytes()

    azure = json.loads((DATA / "tpm" / "azure_vtpm_quote.json").read_bytes())
    tpm_msg = base64.b64decode(azure["tpm_quote"]["message"])
    tpm_sig = base64.b64decode(azure["tpm_quote"]["signature"])
    tpmt = tpmt_public_ecc(ec.generate_private_key(ec.SECP256R1()).public_key())

    key = identity.generate()
    _, receipt_bytes, signature = _receipt(key, "c1")
    signed = SignedReceipt(receipt=receipt_bytes, signature=signature)
    arrays = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.zeros(4, np.float32)}
    model = encode_pure(arrays)

    evidence = Evidence(tee=TeeType.SIM, data=sim_ev.data, aux=sim_ev.aux)
    enroll = EnrollRequest(
        client_id="c1",
        nonce=b"\x22" * 32,
        public_key=identity.public_key_der(key),
        evidence=evidence,
    )
    protos: list[tuple[int, bytes]] = [
        (
            0,
            serde.challenge_request_to_proto(
                ChallengeRequest(client_id="c1", tee=TeeType.SIM, aux={})
            ).SerializeToString(),
        ),
        (
            1,
            serde.challenge_to_proto(
                Challenge(
                    nonce=b"\x22" * 32, expires_unix_ms=NOW_MS, federation_id="fed-fuzz", aux={}
                )
            ).SerializeToString(),
        ),
        (2, serde.enroll_request_to_proto(enroll).SerializeToString()),
        (
            4,
            serde.task_to_proto(
                Task(
                    kind=TaskKind.TRAIN,
                    round=1,
                    global_model_digest=b"\x01" * 32,
                    global_model_size=len(model),
                    retry_after_ms=0,
                    config={"lr": "0.1"},
                    deadline_unix_ms=NOW_MS,
                    federation_id="fed-fuzz",
                )
            ).SerializeToString(),
        ),
        (
            7,
            serde.update_header_to_proto(
                UpdateHeader(receipt=signed, size=len(model))
            ).SerializeToString(),
        ),
        (9, serde.signed_receipt_to_proto(signed).SerializeToString()),
    ]
    authority = CredentialAuthority(
        federation_id=targets.CREDENTIAL_FEDERATION, key=targets.CREDENTIAL_KEY
    )
    token, _ = authority.issue(
        client_id="c1",
        public_key=identity.public_key_der(key),
        tee="sim",
        hardware_backed=False,
        code_identity=b"\x5a" * 48,
        status="affirming",
        now_ms=targets.CREDENTIAL_NOW_MS - 1000,
        ttl_ms=3_600_000,
    )
    ts = targets.CREDENTIAL_NOW_MS
    pop = identity.sign(
        targets.CREDENTIAL_KEY,
        domain=auth.POP_DOMAIN,
        message=auth.pop_message(
            method="/fedtee.v1.Federation/GetTask", credential=token, timestamp_ms=ts
        ),
    )
    metadata = b"".join(
        bytes([sel, text]) + len(value).to_bytes(2, "big") + value
        for sel, text, value in ((0, 0, token), (1, 0, pop), (2, 1, str(ts).encode()))
    )
    quotes = {
        name: (DATA / rel).read_bytes()
        for name, rel in (
            ("sgx", "sgx/occlum_quote_v3.dat"),
            ("tdx", "tdx/tdx_prod_quote_SPR_E4.dat"),
        )
    }
    result = AttestationResult(
        status=Status.AFFIRMING,
        tee=TeeType.SIM,
        hardware_backed=False,
        code_identity=b"\x5a" * 48,
        platform_id=b"\x01" * 32,
        claims={"svn": 1},
        appraised_at=targets.EAR_NOW,
    )
    ear = result.to_ear_jwt(
        targets.CREDENTIAL_KEY, issuer="fedtee-fuzz", now=targets.EAR_NOW - dt.timedelta(minutes=1)
    )
    return {
        "server_config": {"server.toml": (ROOT / "examples" / "server.toml").read_bytes()},
        "client_config": {"client.toml": (ROOT / "examples" / "client.toml").read_bytes()},
        "result_json": {"result.json": result.to_json().encode()},
        "ear_jwt": {"ear.jwt": ear.encode()},
        "verify": {
            "sgx_quote.bin": b"\x00" + quotes["sgx"],
            "tdx_quote.bin": b"\x01" + quotes["tdx"][: TRIM["tdx/tdx_prod_quote_SPR_E4.dat"]],
            "snp_report.bin": b"\x02" + report,
            "snp_report_and_table.bin": b"\x02" + report + table,
        },
        "credential": {"credential.bin": token},
        "metadata": {"metadata.bin": metadata},
        "sim": {"sim_report.bin": sim_ev.data},
        "snp_certs": {"vcek_table.bin": table},
        "snp_evidence": {"report_and_table.bin": report + table},
        "tpm": {"azure_tpms_attest.bin": tpm_msg},
        "tpm_signature": {"azure_tpmt_signature.bin": tpm_sig},
        "tpm_public": {"ecc_p256_tpm2b_public.bin": struct.pack(">H", len(tpmt)) + tpmt},
        "receipts": {"receipt.cbor": receipt_bytes},
        "ledger": {"ledger.jsonl": _ledger()},
        "tensors": {"model.safetensors": model},
        "policy": {"policy.toml": POLICY.format(m="ab" * 48, m32="cd" * 32).encode()},
        "protobuf": {f"msg_{sel}.bin": bytes([sel]) + body for sel, body in protos},
    }


def main() -> int:
    for target, files in VECTORS.items():
        out = CORPUS / target
        out.mkdir(parents=True, exist_ok=True)
        for rel in files:
            blob = (DATA / rel).read_bytes()
            (out / Path(rel).name).write_bytes(blob[: TRIM.get(rel, len(blob))])
    for target, seeds in generated().items():
        out = CORPUS / target
        out.mkdir(parents=True, exist_ok=True)
        for name, blob in seeds.items():
            (out / name).write_bytes(blob)
    print(f"corpus written under {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
