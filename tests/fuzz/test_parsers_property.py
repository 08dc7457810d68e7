"""Property tests over every parser fedtee exposes to untrusted bytes (issue 5, "Fuzzing").

The entry points are the ones the atheris harnesses drive (``fuzz/targets.py``). For each:

- random bytes, and the real vectors from tests/data (plus inputs fedtee's own writers
  produce for the formats it defines) with random bit flips, truncations, extensions,
  splices and extreme integers written over them: nothing but a FedteeError subclass may
  escape, and each input is handled within the hypothesis deadline;
- for the length-prefixed formats, a declared length larger than the input raises the
  parser's typed error without reading past the end or allocating what the length claims.

Bounded for CI: ``max_examples`` 200 per test, deadline 5 s per input (generous: the
machine running CI may be busy; the parsers take milliseconds).
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.errors import (
    CredentialError,
    EvidenceFormatError,
    FedteeError,
    ProtocolError,
    Reason,
    UpdateRejected,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "fuzz"))

import make_corpus  # noqa: E402  (fuzz/ is not a package: the harnesses run as scripts)
import targets  # noqa: E402

DATA = ROOT / "tests" / "data"

SETTINGS = settings(
    max_examples=200,
    deadline=dt.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
)


def _vectors() -> dict[str, list[bytes]]:
    """Real vectors straight from tests/data, plus writer-made inputs for fedtee's formats."""
    seeds: dict[str, list[bytes]] = {name: [] for name in targets.TARGETS}
    for name, files in make_corpus.VECTORS.items():
        for rel in files:
            blob = (DATA / rel).read_bytes()
            seeds[name].append(blob[: make_corpus.TRIM.get(rel, len(blob))])
    for name, blobs in GENERATED.items():
        seeds[name].extend(blobs.values())
    return seeds


GENERATED = make_corpus.generated()
SEEDS = _vectors()
NAMES = sorted(targets.TARGETS)


def _run(name: str, data: bytes) -> FedteeError | None:
    """Run one target; return its typed rejection, fail the test on anything else."""
    try:
        targets.TARGETS[name](data)
    except FedteeError as exc:
        assert isinstance(exc.reason, Reason), f"{name}: error without a stable reason"
        return exc
    # Any other exception propagates and fails the test with its traceback.
    return None


# --- the seeds are valid: the mutations below start from inputs the parser accepts -------------


@pytest.mark.parametrize("name", NAMES)
def test_every_target_has_seeds_it_accepts(name: str) -> None:
    assert SEEDS[name], f"no seeds for {name}"
    for blob in SEEDS[name]:
        assert _run(name, blob) is None, f"{name} rejects its own seed"


# --- random bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.binary(max_size=6000))
def test_random_bytes_raise_only_typed_errors(name: str, data: bytes) -> None:
    _run(name, data)


# --- mutated real vectors ----------------------------------------------------------------------

_EXTREMES = (
    b"\x00\x00\x00\x00",
    b"\xff\xff\xff\xff",
    b"\xff\xff\xff\x7f",
    b"\x7f\xff\xff\xff",
    b"\x00\x00\x00\x80",
    b"\x01\x00\x00\x00",
)


@st.composite
def _mutated(draw: st.DrawFn, name: str) -> bytes:
    seeds = SEEDS[name]
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "truncate", "extend", "splice", "extreme", "byte")))
        if kind == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif kind == "truncate":
            data = data[: draw(st.integers(0, len(data)))]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=256))
        elif kind == "splice":
            # Another seed of any target glued at a random cut: structure from elsewhere.
            other = draw(st.sampled_from([b for name_ in NAMES for b in SEEDS[name_]]))
            cut = draw(st.integers(0, len(data)))
            start = draw(st.integers(0, len(other)))
            data = data[:cut] + other[start:]
        elif kind == "extreme" and len(data) >= 4:
            i = draw(st.integers(0, len(data) - 4))
            data[i : i + 4] = draw(st.sampled_from(_EXTREMES))
    return bytes(data)


@pytest.mark.parametrize("name", NAMES)
@SETTINGS
@given(data=st.data())
def test_mutated_vectors_raise_only_typed_errors(name: str, data: st.DataObject) -> None:
    _run(name, data.draw(_mutated(name)))


# --- declared lengths larger than the input ----------------------------------------------------

_MIB = 1 << 20


def _peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _expect(
    name: str,
    data: bytes,
    error: type[FedteeError],
    reasons: set[Reason],
) -> None:
    """``data`` declares more than it holds: a typed error, little memory, nothing read past."""
    caught: list[FedteeError] = []

    def call() -> None:
        try:
            targets.TARGETS[name](data)
        except FedteeError as exc:
            caught.append(exc)

    peak = _peak_bytes(call)
    assert caught, f"{name} accepted an input whose declared length exceeds it"
    assert isinstance(caught[0], error), f"{name}: {type(caught[0]).__name__}: {caught[0]}"
    assert caught[0].reason in reasons, f"{name}: {caught[0].reason}: {caught[0]}"
    # Allocating what a hostile length claims is the bug this guards against.
    assert peak < 8 * _MIB, f"{name} allocated {peak} bytes for a {len(data)}-byte input"


def _put(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


_TRUNC = {Reason.EVIDENCE_TRUNCATED, Reason.EVIDENCE_TOO_LARGE, Reason.EVIDENCE_MALFORMED}

# DCAP: the u32 signature-data length that follows the report body (header 48 bytes; SGX body
# 384, TD 1.0 body 584; v5 adds a 6-byte body descriptor whose u32 size precedes the body).
_SGX_V3 = (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes()
_TDX_V4 = (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935]
_TDX_V5 = (DATA / "tdx" / "quote_v5_sample.dat").read_bytes()


def _v5_sig_len_offset(quote: bytes) -> int:
    (body_size,) = struct.unpack_from("<I", quote, 50)
    return 54 + body_size


_DCAP_LENGTHS = [
    ("sgx", _SGX_V3, 432),
    ("dcap", _SGX_V3, 432),
    ("tdx", _TDX_V4, 632),
    ("dcap", _TDX_V4, 632),
    ("tdx", _TDX_V5, _v5_sig_len_offset(_TDX_V5)),
]


@pytest.mark.parametrize(("name", "quote", "offset"), _DCAP_LENGTHS)
@pytest.mark.parametrize("excess", [1, 4096, 0xFFFFFFFF])
def test_dcap_signature_length_past_the_end(
    name: str, quote: bytes, offset: int, excess: int
) -> None:
    (declared,) = struct.unpack_from("<I", quote, offset)
    assert declared == len(quote) - offset - 4, "layout assumption: length at this offset"
    value = min(declared + excess, 0xFFFFFFFF)
    _expect(name, _put(quote, offset, "<I", value), EvidenceFormatError, _TRUNC)


@pytest.mark.parametrize("excess", [1, 0xFFFF])
def test_dcap_qe_auth_data_length_past_the_end(excess: int) -> None:
    # v3 signature data: 64 sig + 64 key + 384 QE report + 64 QE sig, then u16 auth size.
    offset = 436 + 576
    (declared,) = struct.unpack_from("<H", _SGX_V3, offset)
    _expect(
        "dcap",
        _put(_SGX_V3, offset, "<H", min(declared + excess, 0xFFFF) if excess > 1 else 0xFFFF),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


def test_dcap_v5_body_size_past_the_end() -> None:
    _expect(
        "dcap",
        _put(_TDX_V5, 50, "<I", 0xFFFFFFFF),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


# SEV-SNP certificate table: entries of GUID (16) | offset u32 | length u32.
_TABLE = GENERATED["snp_certs"]["vcek_table.bin"]


@pytest.mark.parametrize("length", [len(_TABLE), 0xFFFF, 0xFFFFFFFF])
def test_snp_cert_table_entry_length_past_the_end(length: int) -> None:
    _expect(
        "snp_certs",
        _put(_TABLE, 20, "<I", length),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


def test_snp_cert_table_entry_offset_past_the_end() -> None:
    _expect("snp_certs", _put(_TABLE, 16, "<I", 0xFFFFFFF0), EvidenceFormatError, _TRUNC)


# TPM 2.0 structures are big-endian with u16 TPM2B sizes.
_TPMS_ATTEST = GENERATED["tpm"]["azure_tpms_attest.bin"]
_TPM2B_PUBLIC = GENERATED["tpm_public"]["ecc_p256_tpm2b_public.bin"]
_TPMT_SIG = GENERATED["tpm_signature"]["azure_tpmt_signature.bin"]


@pytest.mark.parametrize("size", [0x1000, 0xFFFF])
def test_tpm_attest_qualified_signer_size_past_the_end(size: int) -> None:
    # magic u32 | type u16 | qualifiedSigner TPM2B_NAME (u16 size)
    _expect(
        "tpm",
        _put(_TPMS_ATTEST, 6, ">H", size),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


@pytest.mark.parametrize("size", [len(_TPM2B_PUBLIC) - 1, 0xFFFF])
def test_tpm2b_public_size_past_the_end(size: int) -> None:
    _expect(
        "tpm_public",
        _put(_TPM2B_PUBLIC, 0, ">H", size),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


def test_tpm_signature_size_past_the_end() -> None:
    # sigAlg u16 | hashAlg u16 | TPM2B signature (u16 size)
    _expect(
        "tpm_signature",
        _put(_TPMT_SIG, 4, ">H", 0xFFFF),
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


# CBOR (COSE tokens and receipts): lengths and counts in the item head.
_CBOR_HUGE = [
    b"\x5a\xff\xff\xff\xff" + b"ab",  # byte string of 2^32-1 bytes, 2 present
    b"\x5b" + b"\x7f" + b"\xff" * 7 + b"ab",  # byte string of 2^63-1 bytes
    b"\x7a\x00\x01\x00\x00" + b"x",  # text string of 65536 bytes, 1 present
    b"\x9b" + b"\x7f" + b"\xff" * 7,  # array of 2^63-1 items, none present
    b"\xbb" + b"\x7f" + b"\xff" * 7,  # map of 2^63-1 pairs, none present
    b"\xd2\x84\x5a\xff\xff\xff\xff",  # tag 18 [ bstr(2^32-1) ... ]
]


@pytest.mark.parametrize("name", ["cose", "psa", "cca"])
@pytest.mark.parametrize("blob", _CBOR_HUGE)
def test_cbor_declared_length_past_the_end(name: str, blob: bytes) -> None:
    _expect(
        name,
        blob,
        EvidenceFormatError,
        _TRUNC | {Reason.EVIDENCE_FIELD_INVALID},
    )


@pytest.mark.parametrize("blob", _CBOR_HUGE)
def test_receipt_declared_length_past_the_end(blob: bytes) -> None:
    _expect("receipts", blob, UpdateRejected, {Reason.RECEIPT_MALFORMED})


@pytest.mark.parametrize("blob", _CBOR_HUGE)
def test_cbor_length_past_the_end_inside_a_real_token(blob: bytes) -> None:
    # The PSA vector's payload is a bstr: make its declared length exceed the token.
    token = (DATA / "psa" / "psa-2_0_0_sign1.bin").read_bytes()
    cut = token[: len(token) // 2] + blob
    _expect("psa", cut, EvidenceFormatError, _TRUNC | {Reason.EVIDENCE_FIELD_INVALID})


# safetensors: u64 little-endian header length, then the JSON header.
_MODEL = GENERATED["tensors"]["model.safetensors"]


@pytest.mark.parametrize("declared", [len(_MODEL), 1 << 32, (1 << 64) - 1])
def test_safetensors_header_length_past_the_end(declared: int) -> None:
    _expect(
        "tensors",
        _put(_MODEL, 0, "<Q", declared),
        UpdateRejected,
        {Reason.UPDATE_MALFORMED},
    )


# Credentials: version byte, u16be payload length, payload, signature.
_TOKEN = GENERATED["credential"]["credential.bin"]


@pytest.mark.parametrize("declared", [len(_TOKEN), 0xFFFF])
def test_credential_payload_length_past_the_end(declared: int) -> None:
    _expect(
        "credential", _put(_TOKEN, 1, ">H", declared), CredentialError, {Reason.CREDENTIAL_INVALID}
    )


def test_protobuf_embedded_length_past_the_end_is_rejected_before_fedtee() -> None:
    # EnrollRequest (selector 2) whose first length-delimited field claims 2^28 bytes: the
    # protobuf runtime refuses it (grpc INTERNAL) and fedtee's conversion is never reached.
    blob = bytes([2]) + b"\x0a\x80\x80\x80\x80\x01" + b"x"
    peak = _peak_bytes(lambda: targets.protobuf_message(blob))
    assert peak < 8 * _MIB


def test_protobuf_oversized_fields_are_typed_protocol_errors() -> None:
    # A decodable Challenge whose nonce is too long: serde's own check, a typed error.
    from fedtee.wire._gen.fedtee.v1 import federation_pb2 as pb

    msg = pb.Challenge(nonce=b"\x00" * 65, federation_id="f").SerializeToString()
    with pytest.raises(ProtocolError) as info:
        targets.protobuf_message(bytes([1]) + msg)
    assert info.value.reason is Reason.MESSAGE_MALFORMED


# --- deep nesting: recursion must end in a typed error, never RecursionError -------------------


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


_NESTED: dict[str, Callable[[int], bytes]] = {
    "ledger": lambda n: b"[" * n + b"]" * n + b"\n",
    "tensors": lambda n: struct.pack("<Q", 2 * n) + b"[" * n + b"]" * n,
    "tpm": lambda n: b'{"tpm_quote":' + b"[" * n + b"]" * n + b"}",
    "policy": lambda n: b"a = " + b"[" * n + b"]" * n,
    "server_config": lambda n: b"a = " + b"[" * n + b"]" * n,
    "client_config": lambda n: b"a = " + b"[" * n + b"]" * n,
    "result_json": lambda n: b"[" * n + b"]" * n,
    "ear_jwt": lambda n: _b64(b"[" * n + b"]" * n) + b"." + _b64(b"{}") + b".AA",
    "cose": lambda n: b"\x81" * n + b"\x00",
    "psa": lambda n: b"\xd2\x84" + b"\x81" * n + b"\x00",
    "cca": lambda n: b"\xd9\x01\x8f\xa1\x19\xac\xca" + b"\x81" * n + b"\x00",
    "receipts": lambda n: b"\xa1\x61a" * n + b"\x00",
    "protobuf": lambda n: bytes([2]) + b"\x2a\x02\x2a\x00" * n,
}


# policy, server_config, client_config and tpm raised RecursionError here until 87e18f2
# (inputs kept in tests/fuzz/regressions/).
@pytest.mark.parametrize("name", sorted(_NESTED))
def test_deep_nesting_is_a_typed_error(name: str) -> None:
    for depth in (1, 10, 100, 1000, 10_000):
        data = _NESTED[name](depth)
        # A shallow input may be accepted or rejected; a deep one must be a typed rejection.
        err = _run(name, data)
        if depth >= 1000:
            assert err is not None, f"{name} accepted {depth}-deep nesting"
