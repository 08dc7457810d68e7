"""fedtee.codec: round-trip error bounds per encoding, and every malformed input is typed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from fedtee import codec, tensors
from fedtee.codec import ENCODING_KEY, Encoding
from fedtee.errors import Reason, UpdateRejected

Arrays = dict[str, NDArray[Any]]
F32_EPS = float(np.finfo(np.float32).eps)


def _model(seed: int, rows: int = 20, cols: int = 30) -> Arrays:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.normal(size=(rows, cols)).astype(np.float32),
        "dense.bias": rng.normal(size=(cols,)).astype(np.float32),
        "steps": np.array([7, 8], dtype=np.int64),
    }


def _trained(global_arrays: Arrays, seed: int, step: float = 0.05) -> Arrays:
    rng = np.random.default_rng(seed + 1000)
    out: Arrays = {}
    for name, arr in global_arrays.items():
        if arr.dtype.kind == "f":
            out[name] = (arr + rng.normal(scale=step, size=arr.shape)).astype(arr.dtype)
        else:
            out[name] = arr + 1
    return out


def _decode(data: bytes, global_arrays: Arrays, encoding: Encoding | None = None) -> Arrays:
    update = codec.open_update(
        data,
        spec=tensors.ModelSpec.of(global_arrays),
        global_arrays=global_arrays,
        encoding=encoding,
    )
    return {name: np.array(update[name]) for name in update}


@pytest.mark.parametrize("encoding", list(Encoding))
def test_every_encoding_round_trips_names_shapes_dtypes_and_integers(encoding: Encoding) -> None:
    g = _model(1)
    u = _trained(g, 1)
    data = codec.encode_update(u, global_arrays=g, encoding=encoding, topk_fraction=0.1)
    out = _decode(data, g, encoding)
    assert tensors.ModelSpec.of(out) == tensors.ModelSpec.of(g)
    np.testing.assert_array_equal(out["steps"], u["steps"])  # integers travel unchanged
    assert len(data) <= codec.max_encoded_size(encoding, tensors.ModelSpec.of(g))
    meta = tensors.decode_metadata(data)
    assert meta.get(ENCODING_KEY, "safetensors") == encoding.value


def test_compressed_encodings_are_smaller_than_plain() -> None:
    g = _model(2, rows=100, cols=100)
    u = _trained(g, 2)
    sizes = {
        e: len(codec.encode_update(u, global_arrays=g, encoding=e, topk_fraction=0.05))
        for e in Encoding
    }
    plain = sizes[Encoding.SAFETENSORS]
    assert sizes[Encoding.F16] < 0.55 * plain
    assert sizes[Encoding.INT8] < 0.3 * plain
    assert (
        sizes[Encoding.TOPK_INT8] < sizes[Encoding.TOPK_F16] < sizes[Encoding.TOPK] < 0.15 * plain
    )


_shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=_shapes, seed=st.integers(0, 2**31), scale=st.sampled_from([1e-4, 1e-2, 1.0, 100.0]))
def test_error_bounds_hold_for_random_updates(
    shape: tuple[int, int], seed: int, scale: float
) -> None:
    rng = np.random.default_rng(seed)
    g = {"w": rng.normal(size=shape).astype(np.float32)}
    u = {"w": (g["w"] + rng.normal(scale=scale, size=shape)).astype(np.float32)}
    delta = u["w"].astype(np.float64) - g["w"]
    # What float32 rounding alone may cost when global + delta is formed again.
    add_slack = 4 * F32_EPS * (np.abs(u["w"]).astype(np.float64) + np.abs(delta)) + 1e-30

    out = _decode(codec.encode_update(u, global_arrays=g, encoding=Encoding.SAFETENSORS), g)
    np.testing.assert_array_equal(out["w"], u["w"])

    out = _decode(codec.encode_update(u, global_arrays=g, encoding=Encoding.F16), g)
    err = np.abs(out["w"] - u["w"].astype(np.float64))
    assert (err <= np.abs(delta) * 2.0**-11 + 2.0**-24 + add_slack).all()

    out = _decode(codec.encode_update(u, global_arrays=g, encoding=Encoding.INT8), g)
    step = float(np.float32(np.abs(delta).max() / 127))
    err = np.abs(out["w"] - u["w"].astype(np.float64))
    assert (err <= step / 2 + 1e-6 * step + add_slack).all()

    fraction = 0.25
    data = codec.encode_update(u, global_arrays=g, encoding=Encoding.TOPK, topk_fraction=fraction)
    out = _decode(data, g)
    k = max(1, int(np.ceil(fraction * delta.size)))
    changed = out["w"] != g["w"]
    assert int(changed.sum()) <= k
    kth = np.sort(np.abs(delta).ravel())[-k]
    err = np.abs(out["w"] - u["w"].astype(np.float64))
    assert (err <= kth + add_slack).all()  # what was left out is never larger than what was sent


def test_decoded_update_is_lazy_and_fresh_per_tensor() -> None:
    g = _model(3)
    u = _trained(g, 3)
    update = codec.open_update(
        codec.encode_update(u, global_arrays=g, encoding=Encoding.INT8),
        spec=tensors.ModelSpec.of(g),
        global_arrays=g,
    )
    assert isinstance(update, codec.EncodedUpdate)
    w = update["dense.weight"]
    w[0, 0] = 1e9  # a decoded tensor is its own array, never a view into the global model
    assert g["dense.weight"][0, 0] != 1e9
    assert list(update) == sorted(g)


# --- malformed input -------------------------------------------------------------------------

G = _model(4, rows=3, cols=4)
SPEC = tensors.ModelSpec.of(G)


def _container(arrays: Arrays, encoding: str | None = "topk", **extra: str) -> bytes:
    meta = {} if encoding is None else {ENCODING_KEY: encoding}
    meta.update(extra)
    return tensors.encode_pure(arrays, metadata=meta or None)


def _topk(idx: list[int], val: list[float], *, vdtype: Any = np.float32) -> Arrays:
    return {
        "dense.weight#idx": np.array(idx, dtype=np.int32),
        "dense.weight#val": np.array(val, dtype=vdtype),
        "dense.bias#idx": np.array([0], dtype=np.int32),
        "dense.bias#val": np.array([0.5], dtype=vdtype),
        "steps": np.array([1, 2], dtype=np.int64),
    }


def _reason_of(data: bytes, encoding: Encoding | None = None) -> Reason:
    with pytest.raises(UpdateRejected) as info:
        update = codec.open_update(data, spec=SPEC, global_arrays=G, encoding=encoding)
        assert isinstance(update, codec.EncodedUpdate)
        update.validate()
    return info.value.reason


def test_a_well_formed_hand_made_topk_container_decodes() -> None:
    out = _decode(_container(_topk([0, 5, 11], [1.0, 2.0, 3.0])), G)
    assert out["dense.weight"].ravel()[5] == pytest.approx(G["dense.weight"].ravel()[5] + 2.0)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_container(_topk([0, 12], [1.0, 1.0])), Reason.UPDATE_MALFORMED),  # index = n
        (_container(_topk([-1, 3], [1.0, 1.0])), Reason.UPDATE_MALFORMED),  # negative
        (_container(_topk([3, 3], [1.0, 1.0])), Reason.UPDATE_MALFORMED),  # duplicate
        (_container(_topk([4, 3], [1.0, 1.0])), Reason.UPDATE_MALFORMED),  # unordered
        (_container(_topk(list(range(13)), [0.0] * 13)), Reason.UPDATE_MALFORMED),  # k > n
        (_container(_topk([1, 2], [1.0])), Reason.UPDATE_MALFORMED),  # idx/val lengths differ
        (_container(_topk([1], [np.nan])), Reason.UPDATE_NONFINITE),
        (_container(_topk([1], [np.inf])), Reason.UPDATE_NONFINITE),
        (_container(_topk([1], [1.0], vdtype=np.float64)), Reason.UPDATE_SHAPE_MISMATCH),
        (_container(_topk([1], [1.0]), encoding="int8"), Reason.UPDATE_SHAPE_MISMATCH),
        (_container(_topk([1], [1.0]), encoding="gzip"), Reason.UPDATE_MALFORMED),
        (_container(_topk([1], [1.0]), note="x"), Reason.UPDATE_MALFORMED),  # extra metadata
        (
            _container({**_topk([1], [1.0]), "extra": np.zeros(1, np.float32)}),
            Reason.UPDATE_SHAPE_MISMATCH,
        ),
        (
            _container({k: v for k, v in _topk([1], [1.0]).items() if k != "steps"}),
            Reason.UPDATE_SHAPE_MISMATCH,
        ),
        (b"\x00" * 8, Reason.UPDATE_MALFORMED),
        (b"junk", Reason.UPDATE_MALFORMED),
    ],
)
def test_malformed_topk_containers_are_rejected_with_their_reason(
    data: bytes, reason: Reason
) -> None:
    assert _reason_of(data) is reason


def _int8(q: list[int], scale: float) -> Arrays:
    qw = np.zeros((3, 4), dtype=np.int8)
    qw.ravel()[: len(q)] = q
    return {
        "dense.weight": qw,
        "dense.weight#scale": np.array([scale], dtype=np.float32),
        "dense.bias": np.zeros(4, dtype=np.int8),
        "dense.bias#scale": np.array([0.0], dtype=np.float32),
        "steps": np.array([1, 2], dtype=np.int64),
    }


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        (_int8([-128], 0.1), Reason.UPDATE_MALFORMED),
        (_int8([1], float("nan")), Reason.UPDATE_MALFORMED),
        (_int8([1], float("inf")), Reason.UPDATE_MALFORMED),
        (_int8([1], -0.5), Reason.UPDATE_MALFORMED),
        (_int8([127], 3e38), Reason.UPDATE_NONFINITE),
        (
            {**_int8([1], 0.1), "dense.weight": np.zeros((4, 3), np.int8)},
            Reason.UPDATE_SHAPE_MISMATCH,
        ),
        (
            {**_int8([1], 0.1), "dense.weight#scale": np.zeros(2, np.float32)},
            Reason.UPDATE_SHAPE_MISMATCH,
        ),
    ],
)
def test_malformed_int8_containers_are_rejected_with_their_reason(
    arrays: Arrays, reason: Reason
) -> None:
    assert _reason_of(_container(arrays, encoding="int8")) is reason


def test_a_well_formed_int8_container_decodes() -> None:
    out = _decode(_container(_int8([127], 0.5), encoding="int8"), G)
    assert out["dense.weight"].ravel()[0] == pytest.approx(G["dense.weight"].ravel()[0] + 63.5)


def test_declared_encoding_must_match_the_signed_bytes() -> None:
    g = _model(5, rows=3, cols=4)
    data = codec.encode_update(_trained(g, 5), global_arrays=g, encoding=Encoding.F16)
    assert _reason_of(data, Encoding.INT8) is Reason.UPDATE_MALFORMED
    assert _reason_of(data, Encoding.SAFETENSORS) is Reason.UPDATE_MALFORMED
    plain = codec.encode_update(_trained(g, 5), global_arrays=g, encoding=Encoding.SAFETENSORS)
    assert _reason_of(plain, Encoding.F16) is Reason.UPDATE_MALFORMED


def test_unknown_encoding_names_are_typed_errors() -> None:
    assert codec.parse_encoding("") is Encoding.SAFETENSORS
    for name in ("F16", "zstd", "topk+topk", "x" * 1000):
        with pytest.raises(UpdateRejected) as info:
            codec.parse_encoding(name)
        assert info.value.reason is Reason.UPDATE_MALFORMED


def test_encoding_refuses_what_it_cannot_represent() -> None:
    g = {"w": np.zeros(4, np.float32)}
    with pytest.raises(UpdateRejected) as info:
        codec.encode_update(
            {"w": np.full(4, 1e6, np.float32)}, global_arrays=g, encoding=Encoding.F16
        )
    assert info.value.reason is Reason.UPDATE_NONFINITE
    with pytest.raises(UpdateRejected) as info:
        codec.encode_update({"v": np.zeros(4, np.float32)}, global_arrays=g, encoding=Encoding.INT8)
    assert info.value.reason is Reason.UPDATE_SHAPE_MISMATCH
    with pytest.raises(ValueError, match="topk_fraction"):
        codec.encode_update(g, global_arrays=g, encoding=Encoding.TOPK, topk_fraction=0.0)


@settings(max_examples=150, deadline=None)
@given(
    encoding=st.sampled_from(list(Encoding)),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutated_encodings_give_the_update_or_a_typed_error(
    encoding: Encoding, flips: list[tuple[int, int]], cut: int | None
) -> None:
    g = _model(6, rows=3, cols=4)
    data = bytearray(
        codec.encode_update(_trained(g, 6), global_arrays=g, encoding=encoding, topk_fraction=0.3)
    )
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    if cut is not None:
        del data[cut % len(data) :]
    try:
        update = codec.open_update(bytes(data), spec=tensors.ModelSpec.of(g), global_arrays=g)
        decoded = {name: update[name] for name in update}
        # What the server checks next for a plain update (an encoded one is already checked).
        tensors.check_update(decoded, spec=tensors.ModelSpec.of(g))
    except UpdateRejected:
        return
    # Whatever was accepted has exactly the model's layout and finite values.
    assert tensors.ModelSpec.of(decoded) == tensors.ModelSpec.of(g)
    assert all(np.isfinite(a).all() for a in decoded.values() if a.dtype.kind == "f")
