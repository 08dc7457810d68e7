"""EncodedArrays: safetensors bytes hashed and chunked without joining them."""

from __future__ import annotations

import numpy as np
import pytest

from fedtee import tensors


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "b": rng.standard_normal(7).astype(np.float32),
        "w": rng.standard_normal((33, 5)).astype(np.float32),
        "steps": np.array(3, dtype=np.int64),  # 0-d
        "empty": np.zeros((0, 4), dtype=np.float16),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "strided": rng.standard_normal((8, 8))[:, ::2],  # not contiguous: copied once
    }


def test_stream_is_byte_identical_to_encode_and_digests_the_same() -> None:
    arrays = _arrays()
    expected = tensors.encode(arrays, metadata={"k": "v"})
    stream = tensors.encode_stream(arrays, metadata={"k": "v"})
    assert stream.size == len(expected)
    assert stream.tobytes() == expected == tensors.encode_pure(arrays, metadata={"k": "v"})
    assert stream.digest() == tensors.digest(expected)


@pytest.mark.parametrize("chunk", [1, 7, 64, 100, 4096, 1 << 20])
@pytest.mark.parametrize("offset", [0, 1, 9, 300])
def test_chunks_from_any_offset_reassemble_the_bytes(chunk: int, offset: int) -> None:
    stream = tensors.encode_stream(_arrays())
    expected = stream.tobytes()
    pieces = list(stream.chunks(chunk, offset=offset))
    assert b"".join(pieces) == expected[offset:]
    assert all(len(p) == chunk for p in pieces[:-1]) and 0 < len(pieces[-1]) <= chunk


def test_parts_share_the_arrays_memory() -> None:
    w = np.zeros((1000,), dtype=np.float32)
    stream = tensors.encode_stream({"w": w})
    before = stream.digest()
    w[0] = 1.0  # a view, not a copy: the stream sees the change
    assert stream.digest() != before
    assert tensors.decode(stream.tobytes())["w"][0] == 1.0


def test_chunks_within_a_tensor_are_read_only_views_of_it() -> None:
    w = np.arange(4096, dtype=np.float32)
    stream = tensors.encode_stream({"w": w})
    header = stream.size - w.nbytes
    chunks = list(stream.chunks(1024, offset=header))
    assert len(chunks) == 16
    assert all(isinstance(c, memoryview) and c.readonly for c in chunks)
    assert np.shares_memory(np.frombuffer(chunks[3], dtype=np.uint8), w)
    w[256] = -1.0  # chunk 1 starts at element 256: a view sees the change, a copy would not
    assert np.frombuffer(chunks[1], dtype=np.float32)[0] == -1.0
    with pytest.raises(TypeError):
        chunks[0][0] = 1  # the sender cannot write into the trainer's arrays
    # A chunk across the header and the tensor is joined into bytes.
    assert isinstance(next(iter(stream.chunks(header + 8))), bytes)


def test_bad_arguments_and_wrapped_bytes() -> None:
    stream = tensors.EncodedArrays.of_bytes(b"abcdef")
    assert b"".join(stream.chunks(4, offset=2)) == b"cdef"
    assert list(stream.chunks(4, offset=6)) == []
    with pytest.raises(ValueError):
        list(stream.chunks(0))
    with pytest.raises(ValueError):
        list(stream.chunks(4, offset=7))
