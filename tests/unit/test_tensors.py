"""Tests for fedtee.tensors: safetensors round trip, strict reader, digests, update checks."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee import tensors
from fedtee.errors import Reason, UpdateRejected
from fedtee.tensors import (
    Limits,
    ModelSpec,
    StreamingDigest,
    check_update,
    decode,
    decode_metadata,
    digest,
    encode,
    parse_header,
)


def _model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "dense.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "dense.bias": rng.standard_normal(3).astype(np.float32),
        "steps": np.array([5], dtype=np.int64),
        "half": rng.standard_normal((2, 2)).astype(np.float16),
    }


def _raw(header: dict[str, object], data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_round_trip_preserves_names_values_and_dtypes() -> None:
    model = _model()
    data = encode(model, metadata={"round": "3"})
    back = decode(data)
    assert set(back) == set(model)
    for name, arr in model.items():
        assert back[name].dtype == arr.dtype
        np.testing.assert_array_equal(back[name], arr)
    assert decode_metadata(data) == {"round": "3"}


def test_decode_without_copy_gives_read_only_views() -> None:
    data = encode(_model())
    back = decode(data, copy=False)
    assert not back["dense.weight"].flags.writeable


def test_encode_rejects_unsupported_dtype() -> None:
    with pytest.raises(UpdateRejected) as err:
        encode({"c": np.zeros(2, dtype=np.complex64)})
    assert err.value.reason is Reason.UPDATE_MALFORMED


def test_digest_matches_streaming_digest_over_chunks() -> None:
    data = encode(_model())
    streaming = StreamingDigest()
    for i in range(0, len(data), 7):
        streaming.update(data[i : i + 7])
    assert streaming.digest() == digest(data)
    assert streaming.size == len(data)
    assert len(digest(data)) == 32
    assert digest(data) != digest(data[:-1] + bytes([data[-1] ^ 1]))


def test_empty_model_round_trip() -> None:
    assert decode(encode({})) == {}


def test_zero_sized_tensor_round_trip() -> None:
    back = decode(encode({"e": np.zeros((0, 3), dtype=np.float32)}))
    assert back["e"].shape == (0, 3)


@pytest.mark.parametrize(
    ("header", "data", "fragment"),
    [
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 9, "cover"),
        ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 7, "cover"),
        ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "bytes for"),
        ({"a": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
        ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
        ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
        (
            {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": 1}},
            b"\0" * 4,
            "exactly",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlap",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            b"\0" * 12,
            "gap",
        ),
        ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
        ([1, 2], b"", "object"),
    ],
)
def test_malformed_headers_are_rejected(header: object, data: bytes, fragment: str) -> None:
    raw = _raw(header, data)  # type: ignore[arg-type]
    with pytest.raises(UpdateRejected) as err:
        decode(raw)
    assert err.value.reason is Reason.UPDATE_MALFORMED
    assert fragment in err.value.message


def test_header_length_beyond_limit_is_rejected_before_reading() -> None:
    raw = struct.pack("<Q", 1 << 40) + b"{}"
    with pytest.raises(UpdateRejected, match="exceeds"):
        parse_header(raw)


def test_header_length_past_end_is_rejected() -> None:
    with pytest.raises(UpdateRejected, match="past the end"):
        parse_header(struct.pack("<Q", 100) + b"{}")


def test_duplicate_keys_and_nan_constants_are_rejected() -> None:
    text = b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}'
    with pytest.raises(UpdateRejected, match="duplicate"):
        decode(struct.pack("<Q", len(text)) + text)
    text = b'{"__metadata__": {"x": NaN}}'
    with pytest.raises(UpdateRejected):
        decode(struct.pack("<Q", len(text)) + text)


def test_limits_on_tensor_count_and_elements() -> None:
    data = encode({"a": np.zeros(10, np.float32), "b": np.zeros(1, np.float32)})
    with pytest.raises(UpdateRejected, match="tensors exceed"):
        decode(data, limits=Limits(max_tensors=1))
    with pytest.raises(UpdateRejected, match="elements exceed"):
        decode(data, limits=Limits(max_elements=5))
    with pytest.raises(UpdateRejected, match="data bytes exceed"):
        decode(data, limits=Limits(max_total_bytes=8))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_update_rejected(data: bytes) -> None:
    try:
        decode(data)
    except UpdateRejected as exc:
        assert exc.reason is Reason.UPDATE_MALFORMED


_VALID = encode(_model(), metadata={"k": "v"})


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=len(_VALID) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=0, max_value=len(_VALID)),
)
def test_mutated_bytes_raise_only_update_rejected(edits: list[tuple[int, int]], cut: int) -> None:
    buf = bytearray(_VALID)
    for pos, value in edits:
        buf[pos] = value
    for candidate in (bytes(buf), bytes(buf[:cut]), bytes(buf) + b"\0"):
        try:
            arrays = decode(candidate)
        except UpdateRejected as exc:
            assert exc.reason is Reason.UPDATE_MALFORMED
        else:
            assert all(isinstance(a, np.ndarray) for a in arrays.values())


def test_check_update_accepts_matching_update() -> None:
    model = _model()
    check_update(model, spec=ModelSpec.of(model))


def test_check_update_shape_mismatch() -> None:
    model = _model()
    spec = ModelSpec.of(model)
    for bad in (
        {**model, "dense.bias": np.zeros(4, np.float32)},
        {k: v for k, v in model.items() if k != "steps"},
        {**model, "extra": np.zeros(1, np.float32)},
        {**model, "dense.bias": model["dense.bias"].astype(np.float64)},
    ):
        with pytest.raises(UpdateRejected) as err:
            check_update(bad, spec=spec)
        assert err.value.reason is Reason.UPDATE_SHAPE_MISMATCH


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_check_update_nonfinite(value: float) -> None:
    model = _model()
    bad = {**model, "dense.weight": model["dense.weight"].copy()}
    bad["dense.weight"][1, 2] = value
    with pytest.raises(UpdateRejected) as err:
        check_update(bad, spec=ModelSpec.of(model))
    assert err.value.reason is Reason.UPDATE_NONFINITE


def test_check_update_norm_bound() -> None:
    model = _model()
    update = {k: v.copy() for k, v in model.items()}
    update["dense.bias"] = update["dense.bias"] + np.float32(3.0)  # delta norm = 3*sqrt(3)
    spec = ModelSpec.of(model)
    check_update(update, spec=spec, global_arrays=model, max_norm=5.3)
    with pytest.raises(UpdateRejected) as err:
        check_update(update, spec=spec, global_arrays=model, max_norm=5.1)
    assert err.value.reason is Reason.UPDATE_NORM_EXCEEDED


def test_model_spec_names_and_elements() -> None:
    spec = ModelSpec.of(_model())
    assert spec.names == ("dense.bias", "dense.weight", "half", "steps")
    assert spec.num_elements == 12 + 3 + 1 + 4


_DTYPE_CHOICES = [
    np.float32,
    np.float64,
    np.float16,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
]


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.tuples(
            st.sampled_from(_DTYPE_CHOICES),
            st.lists(st.integers(0, 4), max_size=3),
            st.integers(0, 2**32 - 1),
        ),
        max_size=5,
    )
)
def test_round_trip_property(spec: dict[str, tuple[type, list[int], int]]) -> None:
    arrays = {}
    for name, (dtype, shape, seed) in spec.items():
        rng = np.random.default_rng(seed)
        arrays[name] = (rng.standard_normal(shape) * 50).astype(dtype)
    data = encode(arrays)
    back = decode(data)
    assert set(back) == set(arrays)
    for name, arr in arrays.items():
        assert back[name].dtype == arr.dtype and back[name].shape == arr.shape
        np.testing.assert_array_equal(back[name], arr)
    assert encode(back) == data  # deterministic: same arrays, same bytes, same digest


def test_scalar_and_non_contiguous_arrays_round_trip() -> None:
    t = np.arange(6, dtype=np.float32).reshape(2, 3).T
    back = decode(encode({"s": np.array(2.5, np.float64), "t": t}))
    assert back["s"].shape == ()
    assert float(back["s"]) == 2.5
    np.testing.assert_array_equal(back["t"], t)


def test_header_from_prefix_checks_uploads_early() -> None:
    from fedtee.tensors import header_from_prefix

    data = encode(_model())
    full = parse_header(data)
    assert header_from_prefix(data[:4], total_size=len(data)) is None
    assert header_from_prefix(data[: full.data_start - 1], total_size=len(data)) is None
    early = header_from_prefix(data[: full.data_start + 3], total_size=len(data))
    assert early == full
    with pytest.raises(UpdateRejected, match="cover"):  # declared size disagrees with header
        header_from_prefix(data[: full.data_start], total_size=len(data) + 1)
    with pytest.raises(UpdateRejected, match="past the declared size"):
        header_from_prefix(data[:8], total_size=full.data_start - 1)
    hostile = struct.pack("<Q", 1 << 40)
    with pytest.raises(UpdateRejected, match="exceeds"):
        header_from_prefix(hostile, total_size=1 << 41)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.tuples(
            st.sampled_from(_DTYPE_CHOICES),
            st.lists(st.integers(0, 3), max_size=3),
            st.integers(0, 2**32 - 1),
        ),
        max_size=6,
    ),
    st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=1),
)
def test_pure_writer_is_byte_identical_to_safetensors(
    spec: dict[str, tuple[type, list[int], int]], metadata: dict[str, str]
) -> None:
    from safetensors.numpy import save

    from fedtee.tensors import encode_pure

    arrays = {
        name: np.asarray((np.random.default_rng(seed).standard_normal(shape) * 50).astype(dtype))
        for name, (dtype, shape, seed) in spec.items()
    }
    # (At most one metadata entry: safetensors keeps metadata in a hash map, so the order of
    # several entries is not fixed even in its own output.)
    assert encode_pure(arrays, metadata=metadata or None) == save(arrays, metadata=metadata or None)


def test_encode_without_safetensors_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from fedtee.tensors import encode_pure

    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # import now fails
    with pytest.raises(ImportError):
        import safetensors.numpy  # noqa: F401
    model = _model()
    data = encode(model, metadata={"k": "v"})
    assert data == encode_pure(model, metadata={"k": "v"})
    back = decode(data)
    for name, arr in model.items():
        np.testing.assert_array_equal(back[name], arr)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_finite_checks_every_block_without_a_full_size_temporary(dtype: type) -> None:
    n = tensors.FINITE_BLOCK * 2 + 17
    array = np.linspace(-3, 3, n).astype(dtype).reshape(-1, 1)
    assert tensors.all_finite(array)
    for where in (0, tensors.FINITE_BLOCK - 1, tensors.FINITE_BLOCK, n - 1):
        for bad in (np.nan, np.inf, -np.inf):
            broken = array.copy()
            broken.reshape(-1)[where] = bad
            assert not tensors.all_finite(broken)
            assert not tensors.all_finite(broken, scratch=np.empty(tensors.FINITE_BLOCK, bool))
    assert tensors.all_finite(np.array([np.iinfo(np.int64).max], dtype=np.int64))
    assert tensors.all_finite(np.zeros(0, dtype=np.float32))


def test_check_update_reads_each_tensor_once_and_reports_shapes_before_nonfinite() -> None:
    model = _model()
    reads: dict[str, int] = {}

    class Counting(dict[str, np.ndarray]):
        def __getitem__(self, name: str) -> np.ndarray:
            reads[name] = reads.get(name, 0) + 1
            return dict.__getitem__(self, name)

    update = {k: v + 1 if v.dtype.kind == "f" else v for k, v in model.items()}
    check_update(Counting(update), spec=ModelSpec.of(model), global_arrays=model, max_norm=1e9)
    assert reads == dict.fromkeys(model, 1)
    # A NaN in an early tensor and a wrong shape in a later one: the shape is reported.
    bad = {**update, "dense.bias": update["dense.bias"].copy(), "steps": np.zeros(2, np.int64)}
    bad["dense.bias"][0] = np.nan
    with pytest.raises(UpdateRejected) as err:
        check_update(bad, spec=ModelSpec.of(model))
    assert err.value.reason is Reason.UPDATE_SHAPE_MISMATCH and "steps" in err.value.message


def test_check_update_norm_spans_blocks_and_every_tensor() -> None:
    n = tensors.FINITE_BLOCK * 2 + 3
    model = {"a": np.zeros(n, np.float32), "b": np.zeros(5, np.int64)}
    update = {"a": np.full(n, 0.5, np.float32), "b": np.full(5, 2, np.int64)}
    norm = float(np.sqrt(n * 0.25 + 5 * 4))
    spec = ModelSpec.of(model)
    check_update(update, spec=spec, global_arrays=model, max_norm=norm * (1 + 1e-9))
    with pytest.raises(UpdateRejected) as err:
        check_update(update, spec=spec, global_arrays=model, max_norm=norm * (1 - 1e-9))
    assert err.value.reason is Reason.UPDATE_NORM_EXCEEDED
