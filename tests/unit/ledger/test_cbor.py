"""Tests for fedtee.ledger._cbor, cross-checked against the cbor2 library."""

from __future__ import annotations

import contextlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.ledger import _cbor

_SCALARS = (
    st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=30)
    | st.floats(allow_nan=False, allow_infinity=False)
)
_VALUES = st.recursive(
    _SCALARS, lambda inner: st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=12
)


@settings(max_examples=300, deadline=None)
@given(_VALUES)
def test_round_trip_and_agreement_with_cbor2(value: object) -> None:
    encoded = _cbor.encode(value)
    assert cbor2.loads(encoded) == value
    try:
        decoded = _cbor.decode(encoded)
    except _cbor.CborError as exc:
        assert "too deep" in str(exc)
        return
    assert decoded == value
    assert _cbor.encode(decoded) == encoded


@pytest.mark.parametrize(
    "value",
    [0, 23, 24, 255, 256, 2**32, -1, -25, 1.5, 0.1, 1e300, -0.0, 65504.0, "", "é", b"", {"a": 1}],
)
def test_matches_cbor2_canonical(value: object) -> None:
    assert _cbor.encode(value) == cbor2.dumps(value, canonical=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x18\x05",  # 5 in a one-byte head: not shortest
        b"\x19\x00\x05",
        b"\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00",  # 1.5 as a double: not shortest
        b"\xf9\x7e\x00",  # NaN
        b"\xf9\x7c\x00",  # infinity
        b"\x5f\x41\x00\xff",  # indefinite byte string
        b"\x82\x01\x02",  # array
        b"\xc1\x01",  # tag
        b"\xf5",  # true
        b"\xf6",  # null
        b"\xa2\x61b\x01\x61a\x02",  # keys out of order
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        b"\xa1\x01\x02",  # integer key
        b"\x62\xff\xfe",  # invalid UTF-8
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",  # length beyond the input
        b"\xbb\x7f\xff\xff\xff\xff\xff\xff\xff",  # huge map count
        b"\x01\x02",  # trailing byte
        b"\xa1\x61a" * 10 + b"\x01",  # too deep
    ],
)
def test_decoder_rejects(data: bytes) -> None:
    with pytest.raises(_cbor.CborError):
        _cbor.decode(data)


@pytest.mark.parametrize("value", [True, None, [1], float("nan"), float("inf"), {1: 2}, 2**64])
def test_encoder_rejects_outside_the_subset(value: object) -> None:
    with pytest.raises(_cbor.CborError):
        _cbor.encode(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_input_raises_only_cbor_error(data: bytes) -> None:
    with contextlib.suppress(_cbor.CborError):
        _cbor.decode(data)
