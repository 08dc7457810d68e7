"""Tests for fedtee.ledger.receipts and fedtee.identity."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee import identity
from fedtee.errors import Reason, UpdateRejected, VerificationError
from fedtee.ledger.receipts import (
    Receipt,
    SignedReceipt,
    check_receipt,
    receipt_hash,
    sign_receipt,
    verify_receipt,
)

GLOBAL = bytes(range(32))
UPDATE = bytes(range(32, 64))
MEASUREMENT = b"\xab" * 48


def _receipt(**overrides: object) -> Receipt:
    fields: dict[str, object] = {
        "federation_id": "fed-1",
        "round": 3,
        "client_id": "client-a",
        "global_model_digest": GLOBAL,
        "update_digest": UPDATE,
        "num_examples": 120,
        "measurement": MEASUREMENT,
        "metrics": {"loss": 0.25, "accuracy": 0.9},
        "created_unix_ms": 1_700_000_000_000,
    }
    fields.update(overrides)
    return Receipt(**fields)  # type: ignore[arg-type]


KEY = identity.generate()


def test_sign_verify_round_trip() -> None:
    receipt = _receipt()
    signed = sign_receipt(receipt, KEY)
    assert verify_receipt(signed, identity.public_key_der(KEY)) == receipt
    assert verify_receipt(signed, KEY.public_key()) == receipt


def test_encoding_is_deterministic_and_metric_order_free() -> None:
    a = _receipt(metrics={"loss": 0.25, "accuracy": 0.9})
    b = _receipt(metrics={"accuracy": 0.9, "loss": 0.25})
    assert a.encode() == b.encode()
    assert Receipt.decode(a.encode()) == a


def test_integer_metrics_are_normalised_to_float() -> None:
    r = _receipt(metrics={"n": 3})
    assert Receipt.decode(r.encode()).metrics == {"n": 3.0}


def test_wrong_key_is_rejected() -> None:
    signed = sign_receipt(_receipt(), KEY)
    with pytest.raises(UpdateRejected) as err:
        verify_receipt(signed, identity.generate().public_key())
    assert err.value.reason is Reason.RECEIPT_SIGNATURE_INVALID


def test_every_flipped_bit_of_body_or_signature_is_rejected() -> None:
    signed = sign_receipt(_receipt(), KEY)
    pub = KEY.public_key()
    for i in range(0, len(signed.receipt) * 8, 5):
        body = bytearray(signed.receipt)
        body[i // 8] ^= 1 << (i % 8)
        with pytest.raises(UpdateRejected) as err:
            verify_receipt(SignedReceipt(receipt=bytes(body), signature=signed.signature), pub)
        assert err.value.reason is Reason.RECEIPT_SIGNATURE_INVALID
    for i in range(len(signed.signature)):
        sig = bytearray(signed.signature)
        sig[i] ^= 0x40
        with pytest.raises(UpdateRejected) as err:
            verify_receipt(SignedReceipt(receipt=signed.receipt, signature=bytes(sig)), pub)
        assert err.value.reason is Reason.RECEIPT_SIGNATURE_INVALID


def test_signature_for_another_domain_is_rejected() -> None:
    body = _receipt().encode()
    sig = identity.sign(KEY, domain=b"other", message=body)
    with pytest.raises(UpdateRejected) as err:
        verify_receipt(SignedReceipt(receipt=body, signature=sig), KEY.public_key())
    assert err.value.reason is Reason.RECEIPT_SIGNATURE_INVALID


def _valid_map() -> dict[str, object]:
    out: dict[str, object] = cbor2.loads(_receipt().encode())
    return out


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.update(extra=1),
        lambda m: m.pop("round"),
        lambda m: m.update(v=2),
        lambda m: m.update(v=True),
        lambda m: m.update(round=-1),
        lambda m: m.update(round="3"),
        lambda m: m.update(num_examples=True),
        lambda m: m.update(global_model_digest=b"\0" * 31),
        lambda m: m.update(update_digest="00" * 32),
        lambda m: m.update(client_id=""),
        lambda m: m.update(measurement=b""),
        lambda m: m.update(metrics={"loss": 1}),
        lambda m: m.update(metrics={"loss": float("nan")}),
        lambda m: m.update(metrics=[1.0]),
    ],
)
def test_malformed_bodies_are_rejected(mutate: object) -> None:
    m = _valid_map()
    mutate(m)  # type: ignore[operator]
    body = cbor2.dumps(m, canonical=True)
    with pytest.raises(UpdateRejected) as err:
        Receipt.decode(body)
    assert err.value.reason is Reason.RECEIPT_MALFORMED


def _map_bytes(items: list[tuple[str, object]]) -> bytes:
    """A CBOR map with the pairs in the given order (cbor2 encodes each key and value)."""
    assert len(items) < 24
    return bytes([0xA0 | len(items)]) + b"".join(
        cbor2.dumps(k, canonical=True) + cbor2.dumps(v, canonical=True) for k, v in items
    )


def test_non_canonical_encodings_are_rejected() -> None:
    items = sorted(_valid_map().items(), key=lambda kv: cbor2.dumps(kv[0]))
    assert _map_bytes(items) == _receipt().encode()  # the canonical form, built independently
    variants = [
        _map_bytes(list(reversed(items))),  # keys out of order
        _map_bytes(items).replace(b"\x65round\x03", b"\x65round\x18\x03"),  # long int head
        cbor2.dumps(_valid_map(), canonical=False),  # floats as doubles, insertion order
    ]
    for body in variants:
        assert body != _receipt().encode()
        with pytest.raises(UpdateRejected) as err:
            Receipt.decode(body)
        assert err.value.reason is Reason.RECEIPT_MALFORMED


def test_oversized_and_truncated_bodies_are_rejected() -> None:
    body = _receipt().encode()
    for bad in (body[:-1], body + b"\0", b"", b"\xff" * 20000, cbor2.dumps([1, 2])):
        with pytest.raises(UpdateRejected) as err:
            Receipt.decode(bad)
        assert err.value.reason is Reason.RECEIPT_MALFORMED


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_raises_only_receipt_malformed(data: bytes) -> None:
    try:
        Receipt.decode(data)
    except UpdateRejected as exc:
        assert exc.reason is Reason.RECEIPT_MALFORMED


_BODY = _receipt().encode()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(_BODY) - 1), st.integers(0, 255))
def test_decode_of_mutated_body_raises_only_receipt_malformed(pos: int, value: int) -> None:
    body = bytearray(_BODY)
    body[pos] = value
    try:
        Receipt.decode(bytes(body))
    except UpdateRejected as exc:
        assert exc.reason is Reason.RECEIPT_MALFORMED


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"federation_id": "fed-2"}, Reason.RECEIPT_FEDERATION_MISMATCH),
        ({"round": 4}, Reason.RECEIPT_ROUND_MISMATCH),
        ({"client_id": "client-b"}, Reason.RECEIPT_CLIENT_MISMATCH),
        ({"global_model_digest": b"\1" * 32}, Reason.RECEIPT_MODEL_MISMATCH),
        ({"update_digest": b"\2" * 32}, Reason.UPDATE_DIGEST_MISMATCH),
        ({"measurement": b"\xac" * 48}, Reason.RECEIPT_MEASUREMENT_MISMATCH),
    ],
)
def test_check_receipt_names_each_mismatch(kwargs: dict[str, object], reason: Reason) -> None:
    expected: dict[str, object] = {
        "federation_id": "fed-1",
        "round": 3,
        "client_id": "client-a",
        "global_model_digest": GLOBAL,
        "update_digest": UPDATE,
        "measurement": MEASUREMENT,
    }
    check_receipt(_receipt(), **expected)  # type: ignore[arg-type]
    expected.update(kwargs)
    with pytest.raises(UpdateRejected) as err:
        check_receipt(_receipt(), **expected)  # type: ignore[arg-type]
    assert err.value.reason is reason


def test_receipt_hash_changes_with_signature() -> None:
    a = sign_receipt(_receipt(), KEY)
    b = sign_receipt(_receipt(), KEY)  # ECDSA is randomised
    assert receipt_hash(a) != receipt_hash(b)
    assert len(receipt_hash(a)) == 32


def test_identity_key_helpers() -> None:
    der = identity.public_key_der(KEY)
    assert identity.public_key_der(identity.load_public_key(der)) == der
    pem = identity.private_key_pem(KEY)
    assert identity.public_key_der(identity.load_private_key_pem(pem)) == der
    with pytest.raises(VerificationError):
        identity.load_public_key(der[:-1])
    with pytest.raises(VerificationError):
        identity.load_public_key(b"\0" * 300)
    assert not identity.verify(KEY.public_key(), domain=b"d", message=b"m", signature=b"\0" * 90)


@settings(max_examples=100, deadline=None)
@given(
    st.text(min_size=1, max_size=40),
    st.integers(0, 2**63 - 1),
    st.text(min_size=1, max_size=40),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**40),
    st.binary(min_size=1, max_size=64),
    st.dictionaries(
        st.text(min_size=1, max_size=10),
        st.floats(allow_nan=False, allow_infinity=False),
        max_size=5,
    ),
)
def test_receipt_round_trip_property(
    fed: str, rnd: int, client: str, digest: bytes, n: int, meas: bytes, metrics: dict[str, float]
) -> None:
    receipt = Receipt(
        federation_id=fed,
        round=rnd,
        client_id=client,
        global_model_digest=digest,
        update_digest=digest[::-1],
        num_examples=n,
        measurement=meas,
        metrics=metrics,
    )
    assert Receipt.decode(receipt.encode()) == receipt


def test_ledger_package_exports_resolve() -> None:
    import fedtee.ledger as pkg

    assert sorted(pkg.__all__) == pkg.__all__
    for name in pkg.__all__:
        assert getattr(pkg, name) is not None


def test_client_side_modules_import_only_what_iot_clients_may() -> None:
    import subprocess
    import sys

    code = (
        "import sys, fedtee.tensors, fedtee.identity, fedtee.ledger.receipts;"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'cbor2', 'safetensors', 'sqlalchemy', 'rich', 'grpc'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
