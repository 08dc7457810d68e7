"""Fuzz targets: one function per parser, taking untrusted bytes.

Shared by the atheris harnesses (``fuzz/fuzz_<name>.py``) and the hypothesis property tests
(``tests/fuzz/test_parsers_property.py``) so both exercise exactly the same entry points.

Contract every target checks: whatever the bytes, the parser either returns or raises a
:class:`fedtee.errors.FedteeError` subclass. Any other exception (IndexError, struct.error,
KeyError, UnicodeDecodeError, RecursionError, MemoryError, ...) is a crash, a hang past the
per-input timeout is a crash, and so is memory above the RSS limit.

A target goes as far as a caller of that parser would in production: the evidence targets
also run the backend's ``describe`` (what ``fedtee attest show`` prints), the protobuf target
runs the ``*_from_proto`` conversion the server or client runs on a decoded message.

The only non-fedtee exception tolerated anywhere is protobuf's own ``DecodeError`` raised by
``Message.FromString``: in production grpc's deserializer raises it before fedtee code runs
(the call fails with grpc INTERNAL), so it is the protobuf runtime's typed rejection, not a
fedtee parser crash. Everything after a successful decode must raise only FedteeError.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import DecodeError, Message

from fedtee.attest.evidence import cca, cose, dcap, psa, sgx, sim, snp, tdx, tpm
from fedtee.attest.model import Evidence, TeeType
from fedtee.attest.policy import Policy
from fedtee.attest.registry import verifier_for
from fedtee.attest.result import AttestationResult, verify_ear_jwt
from fedtee.attest.trust import embedded_anchors
from fedtee.cli.server import parse_server_config
from fedtee.client.config import parse_client_config
from fedtee.errors import CollateralError, Reason
from fedtee.ledger.log import verify_ledger
from fedtee.ledger.receipts import Receipt
from fedtee.server.credentials import CredentialAuthority
from fedtee.tensors import decode as tensors_decode
from fedtee.tensors import header_from_prefix, parse_header
from fedtee.wire import auth, serde
from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb

Target = Callable[[bytes], None]


# --- attestation evidence --------------------------------------------------------------------


def dcap_quote(data: bytes) -> None:
    """The shared SGX/TDX quote parser (v3, v4, v5) and its describe view."""
    dcap.describe_quote(dcap.parse_quote(data))


def sgx_evidence(data: bytes) -> None:
    ev = sgx.evidence_from_files(data, {})
    sgx.describe(ev)


def tdx_evidence(data: bytes) -> None:
    ev = tdx.evidence_from_files(data, {})
    tdx.describe(ev)


def snp_report(data: bytes) -> None:
    snp.describe_report(snp.parse_report(data))


def snp_cert_table(data: bytes) -> None:
    """The GUID/offset/length certificate table that comes with an extended SNP report."""
    snp.parse_cert_table(data)


def snp_evidence(data: bytes) -> None:
    """A report whose first 1184 bytes are the report and the rest the certificate table."""
    ev = snp.evidence_from_files(data[:1184], {"certs": data[1184:]} if len(data) > 1184 else {})
    snp.describe(ev)


def tpm_evidence(data: bytes) -> None:
    """Raw TPMS_ATTEST or the Azure-style quote JSON (same entry point as the CLI)."""
    ev = tpm.evidence_from_files(data, {})
    tpm.describe(ev)


def tpm_public(data: bytes) -> None:
    tpm.parse_public(data)


def tpm_signature(data: bytes) -> None:
    tpm.parse_signature(data)


def cose_sign1(data: bytes) -> None:
    """The strict CBOR decoder, then COSE_Sign1 structure checks."""
    cose.loads(data)
    cose.parse_sign1(data)


def psa_token(data: bytes) -> None:
    ev = psa.evidence_from_files(data, {})
    psa.describe(ev)


def cca_token(data: bytes) -> None:
    ev = cca.evidence_from_files(data, {})
    cca.describe(ev)


def sim_report(data: bytes) -> None:
    sim.describe(Evidence(tee=TeeType.SIM, data=data, aux={}))


# --- evidence through its verifier (what the enrolment gate runs) ----------------------------

_DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


class _DirCollateral:
    """``<root>/<kind>/<key>`` files; the offline collateral bundles under tests/data."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def get(self, kind: str, key: str) -> bytes:
        # Keys come from the (fuzzed) evidence: never let one walk out of the bundle, and
        # treat names the file system refuses (NUL, too long) as absent.
        try:
            path = (self._root / kind / key).resolve()
            found = path.is_relative_to(self._root.resolve()) and path.is_file()
        except (OSError, ValueError):
            found = False
        if not found:
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)
        return path.read_bytes()


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# first input byte -> (TEE, on-disk evidence reader, collateral bundle, verification time);
# the times are the real vectors' verify_at (tests/data/<tee>/expected.json: verify_at, valid_at).
_VERIFY: tuple[tuple[TeeType, Callable[[bytes, Mapping[str, bytes]], Evidence], str, str], ...] = (
    (TeeType.SGX, sgx.evidence_from_files, "sgx", "2025-03-20T00:00:00Z"),
    (TeeType.TDX, tdx.evidence_from_files, "tdx", "2023-07-01T01:00:00Z"),
    (TeeType.SEV_SNP, snp.evidence_from_files, "sev-snp", "2024-01-01T00:00:00Z"),
)
_ANCHORS = embedded_anchors()


def verify_evidence(data: bytes) -> None:
    """Parse and fully verify (signatures, chains to the embedded vendor roots, collateral).

    The first byte picks the TEE; for SEV-SNP, bytes after the 1184-byte report are its
    certificate table.
    """
    selector, body = _selected(data)
    tee, reader, bundle, at = _VERIFY[selector % len(_VERIFY)]
    if tee is TeeType.SEV_SNP and len(body) > snp.REPORT_SIZE:
        evidence = reader(body[: snp.REPORT_SIZE], {"certs": body[snp.REPORT_SIZE :]})
    else:
        evidence = reader(body, {})
    verifier_for(tee).verify(
        evidence,
        trust=_ANCHORS,
        collateral=_DirCollateral(_DATA / bundle / "collateral"),
        now=_at(at),
    )


# --- protocol, models, ledger, policy --------------------------------------------------------


def _selected(data: bytes) -> tuple[int, bytes]:
    return (data[0], data[1:]) if data else (0, b"")


def _signed_receipt(msg: pb.SignedReceipt) -> None:
    Receipt.decode(serde.signed_receipt_from_proto(msg).receipt)


def _update_chunk(msg: pb.UpdateChunk | serde.UpdateDataView) -> None:
    if not isinstance(msg, serde.UpdateDataView) and msg.WhichOneof("part") == "header":
        header = serde.update_header_from_proto(msg)
        Receipt.decode(header.receipt.receipt)
    else:
        serde.update_data_from_proto(msg)


# message type -> what fedtee does with a decoded one (server requests and client responses)
PROTO_MESSAGES: tuple[tuple[type[Message], Callable[[Any], object]], ...] = (
    (pb.ChallengeRequest, serde.challenge_request_from_proto),
    (pb.Challenge, serde.challenge_from_proto),
    (pb.EnrollRequest, serde.enroll_request_from_proto),
    (pb.EnrollResponse, serde.enrolment_from_proto),
    (pb.Task, serde.task_from_proto),
    (pb.ModelRequest, serde.model_request_from_proto),
    (pb.ModelChunk, serde.model_chunk_from_proto),
    (pb.UpdateChunk, _update_chunk),
    (pb.SubmitResult, serde.submit_outcome_from_proto),
    (pb.SignedReceipt, _signed_receipt),
)


# The messages that carry model bytes are read from the wire format by serde itself (as the
# server's and the clients' gRPC deserializers do), protobuf only for other shapes.
WIRE_PARSERS: dict[type[Message], Callable[[bytes], object]] = {
    pb.ModelChunk: serde.model_chunk_from_wire,
    pb.UpdateChunk: serde.update_chunk_from_wire,
}


def protobuf_message(data: bytes) -> None:
    """First byte picks the message type; the rest is its serialized form."""
    selector, body = _selected(data)
    kind, convert = PROTO_MESSAGES[selector % len(PROTO_MESSAGES)]
    try:
        msg = WIRE_PARSERS.get(kind, kind.FromString)(body)
    except DecodeError:
        return  # protobuf runtime's own rejection, raised inside grpc before fedtee code runs
    convert(msg)


def tensors_header(data: bytes) -> None:
    """Header validation of a whole buffer and of a streamed upload's prefix, then decode."""
    # A streamed upload is checked from its first bytes; give it a prefix the size of the
    # header region the buffer claims (or all of it), as the round manager does.
    header_from_prefix(data[: 8 + 4096], total_size=len(data))
    parse_header(data)
    tensors_decode(data)


def receipt(data: bytes) -> None:
    Receipt.decode(data)


def ledger_file(data: bytes) -> None:
    verify_ledger(data, server_public_key=None)


def _text(data: bytes) -> str:
    # Every byte string maps to some text: UTF-8 when valid, else Latin-1.
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def policy_toml(data: bytes) -> None:
    Policy.from_toml(_text(data))


# Pure parsers of the operator's files: base_dir only resolves relative paths, never read.
_CONFIG_DIR = Path("/nonexistent/fedtee-fuzz")


def server_config(data: bytes) -> None:
    parse_server_config(_text(data), base_dir=_CONFIG_DIR)


def client_config(data: bytes) -> None:
    parse_client_config(_text(data), base_dir=_CONFIG_DIR)


def result_json(data: bytes) -> None:
    """An attestation result as JSON (what the enrolment response carries to the client)."""
    AttestationResult.from_json(_text(data))


EAR_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def ear_jwt(data: bytes) -> None:
    """An EAR JWT checked with the fixed test key (seeds are signed with it)."""
    verify_ear_jwt(_text(data), CREDENTIAL_KEY.public_key(), now=EAR_NOW)


# A fixed server key, so seeds issued with it (fuzz/make_corpus.py) verify and the fuzzer
# reaches the payload checks behind the signature. Test-only: never a real federation's key.
CREDENTIAL_KEY = ec.derive_private_key(0x5EED_F0CC_1D, ec.SECP256R1())
CREDENTIAL_FEDERATION = "fed-fuzz"
CREDENTIAL_NOW_MS = 1_700_000_000_000
_AUTHORITY = CredentialAuthority(federation_id=CREDENTIAL_FEDERATION, key=CREDENTIAL_KEY)


def credential(data: bytes) -> None:
    """The token every authenticated call presents (version, u16 length, payload, signature)."""
    _AUTHORITY.verify(data, now_ms=CREDENTIAL_NOW_MS, client_id="c1")


_METADATA_KEYS = (auth.CREDENTIAL_KEY, auth.POP_KEY, auth.TIMESTAMP_KEY, "user-agent")


def call_metadata(data: bytes) -> None:
    """gRPC invocation metadata: items of [key selector | flags | u16be length | value].

    Flags bit 0 makes the value ``str`` (as grpc hands over non ``-bin`` keys), else ``bytes``.
    """
    items: list[tuple[str, str | bytes]] = []
    pos = 0
    while pos + 4 <= len(data) and len(items) < 16:
        key = _METADATA_KEYS[data[pos] % len(_METADATA_KEYS)]
        as_text = data[pos + 1] & 1
        size = int.from_bytes(data[pos + 2 : pos + 4], "big")
        raw = data[pos + 4 : pos + 4 + size]
        pos += 4 + size
        items.append((key, raw.decode("latin-1") if as_text else raw))
    presented = auth.read_metadata(items)
    auth.verify_pop(
        presented,
        method="/fedtee.v1.Federation/GetTask",
        public_key=CREDENTIAL_KEY.public_key(),
        now_ms=presented.timestamp_ms,
    )


TARGETS: Mapping[str, Target] = {
    "dcap": dcap_quote,
    "sgx": sgx_evidence,
    "tdx": tdx_evidence,
    "snp": snp_report,
    "snp_certs": snp_cert_table,
    "snp_evidence": snp_evidence,
    "tpm": tpm_evidence,
    "tpm_public": tpm_public,
    "tpm_signature": tpm_signature,
    "cose": cose_sign1,
    "psa": psa_token,
    "cca": cca_token,
    "sim": sim_report,
    "protobuf": protobuf_message,
    "tensors": tensors_header,
    "receipts": receipt,
    "ledger": ledger_file,
    "policy": policy_toml,
    "credential": credential,
    "metadata": call_metadata,
    "verify": verify_evidence,
    "server_config": server_config,
    "client_config": client_config,
    "result_json": result_json,
    "ear_jwt": ear_jwt,
}
