"""Named numpy arrays <-> safetensors bytes, with a strict reader for untrusted peers.

Models and updates travel as safetensors: an 8-byte little-endian header length, a JSON
header ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``
and the raw little-endian tensor bytes. Writing uses the safetensors package. Reading a
peer's bytes does NOT hand them to a library first: the header is parsed and validated here
with explicit bounds (header size, tensor count, element count, dtype allow-list, offsets
contiguous and covering exactly the data, no trailing bytes), because a hostile header is the
cheapest way to make a server allocate or read what it should not. Any violation raises
:class:`UpdateRejected` with ``Reason.UPDATE_MALFORMED``.

Digests are SHA-256 over the exact safetensors bytes, so a receipt names precisely what was
sent; :class:`StreamingDigest` computes the same value chunk by chunk.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee.errors import Reason, UpdateRejected

Arrays = dict[str, NDArray[Any]]

# safetensors dtype name -> little-endian numpy dtype. BF16 is left out on purpose: numpy has
# no native bfloat16, and accepting bytes we cannot check for finiteness would fail open.
_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
}
_NAMES_BY_DTYPE: dict[np.dtype[Any], str] = {v: k for k, v in _DTYPES.items()}

_HEADER_LEN = struct.Struct("<Q")
_METADATA_KEY = "__metadata__"
_TENSOR_KEYS = frozenset({"dtype", "shape", "data_offsets"})


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds applied before anything a peer sent is allocated or read."""

    max_header_bytes: int = 1 << 20
    max_tensors: int = 4096
    max_rank: int = 8
    max_elements: int = 1 << 31  # per tensor
    max_total_bytes: int = 1 << 34  # all tensor data together
    max_name_len: int = 512
    max_metadata_entries: int = 64
    max_metadata_value_len: int = 4096


DEFAULT_LIMITS = Limits()


def _malformed(message: str) -> UpdateRejected:
    return UpdateRejected(message, reason=Reason.UPDATE_MALFORMED)


# --- digests ---------------------------------------------------------------------------------


def digest(data: bytes | bytearray | memoryview) -> bytes:
    """SHA-256 of the exact safetensors bytes (32 bytes)."""
    return hashlib.sha256(data).digest()


class StreamingDigest:
    """The same SHA-256 as :func:`digest`, fed chunk by chunk as bytes arrive."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._size = 0

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._hash.update(chunk)
        self._size += len(chunk)

    @property
    def size(self) -> int:
        """Bytes hashed so far."""
        return self._size

    def digest(self) -> bytes:
        return self._hash.digest()

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# --- writing ---------------------------------------------------------------------------------


def encode(
    arrays: Mapping[str, NDArray[Any]], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """Serialise named arrays to safetensors bytes (only the dtypes the reader accepts).

    Uses the safetensors package where installed; IoT clients, which may import only numpy,
    grpcio, protobuf and cryptography, get :func:`encode_pure`, which writes the same bytes.
    """
    prepared: dict[str, NDArray[Any]] = {}
    for name, array in arrays.items():
        arr = np.asarray(array)
        le = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if np.dtype(le) not in _NAMES_BY_DTYPE:
            raise _malformed(f"tensor {name!r}: dtype {arr.dtype} is not allowed")
        # astype, not ascontiguousarray: the latter turns 0-d scalars into shape (1,).
        prepared[name] = arr.astype(le, order="C", copy=False)
    try:
        from safetensors.numpy import save  # local: optional on IoT clients
    except ImportError:
        return encode_pure(prepared, metadata=metadata)
    out: bytes = save(prepared, metadata=dict(metadata) if metadata is not None else None)
    return out


# The order the safetensors writer lays tensors out in: by dtype, largest alignment first (its
# dtype enum, reversed), then by name. Keeping it makes encode_pure byte-identical.
_WRITE_RANK = {"I64": 0, "F64": 1, "F32": 2, "I32": 3, "F16": 4, "I16": 5, "I8": 6, "U8": 7}


def encode_pure(
    arrays: Mapping[str, NDArray[Any]], *, metadata: Mapping[str, str] | None = None
) -> bytes:
    """safetensors bytes written with numpy and json only (no safetensors package)."""
    return encode_stream(arrays, metadata=metadata).tobytes()


class EncodedArrays:
    """safetensors bytes as a sequence of parts that are never joined: the 8-byte length and
    JSON header, then each tensor's own memory. Hashing (:meth:`digest`) and sending
    (:meth:`chunks`) walk the parts, so a model of any size is encoded, digested and streamed
    with no second model-sized buffer. The parts are views: the arrays must not change while
    this object is in use.
    """

    def __init__(self, parts: Iterable[bytes | bytearray | memoryview]) -> None:
        self._parts = tuple(memoryview(p).cast("B").toreadonly() for p in parts)
        self.size = sum(len(p) for p in self._parts)

    @classmethod
    def of_bytes(cls, data: bytes | bytearray | memoryview) -> EncodedArrays:
        """Bytes that are already encoded (e.g. a compressed update) in the same interface."""
        return cls([data])

    def digest(self) -> bytes:
        """SHA-256 of the bytes, equal to :func:`digest` of :meth:`tobytes`."""
        hashed = StreamingDigest()
        for part in self._parts:
            hashed.update(part)
        return hashed.digest()

    def chunks(self, chunk_bytes: int, *, offset: int = 0) -> Iterator[bytes | memoryview]:
        """The bytes from ``offset`` as chunks of exactly ``chunk_bytes`` (the last shorter).

        A chunk that lies within one part is a read-only view of it (no copy: the sender
        copies it once into its message); one that spans parts is joined into bytes."""
        if chunk_bytes < 1 or not 0 <= offset <= self.size:
            raise ValueError(f"chunk_bytes {chunk_bytes} / offset {offset} out of range")
        pending = bytearray()
        skip = offset
        for part in self._parts:
            if skip >= len(part):
                skip -= len(part)
                continue
            view, skip = part[skip:], 0
            while view:
                if not pending and len(view) >= chunk_bytes:
                    yield view[:chunk_bytes]  # the common case: a view, not a copy
                    view = view[chunk_bytes:]
                    continue
                take = chunk_bytes - len(pending)
                pending += view[:take]
                view = view[take:]
                if len(pending) == chunk_bytes:
                    yield bytes(pending)
                    pending.clear()
        if pending:
            yield bytes(pending)

    def tobytes(self) -> bytes:
        return b"".join(self._parts)


def encode_stream(
    arrays: Mapping[str, NDArray[Any]], *, metadata: Mapping[str, str] | None = None
) -> EncodedArrays:
    """The safetensors encoding of ``arrays`` (byte-identical to :func:`encode`) as parts
    that share the arrays' memory where they are already little-endian and C-contiguous."""
    entries: list[tuple[str, str, NDArray[Any]]] = []
    for name, array in arrays.items():
        arr = np.asarray(array)
        le = np.dtype(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        dtype_name = _NAMES_BY_DTYPE.get(le)
        if dtype_name is None:
            raise _malformed(f"tensor {name!r}: dtype {arr.dtype} is not allowed")
        entries.append((name, dtype_name, arr.astype(le, order="C", copy=False)))
    entries.sort(key=lambda e: (_WRITE_RANK[e[1]], e[0]))
    header: dict[str, Any] = {}
    if metadata:
        header[_METADATA_KEY] = dict(metadata)
    offset = 0
    for name, dtype_name, arr in entries:
        header[name] = {
            "dtype": dtype_name,
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(len(text)) % 8)  # the data section starts 8-byte aligned
    # reshape(-1) of a C-contiguous array is a view; uint8 makes every part a flat byte run.
    return EncodedArrays(
        [
            _HEADER_LEN.pack(len(text)) + text,
            *(arr.reshape(-1).view(np.uint8).data for _, _, arr in entries),
        ]
    )


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    name: str
    dtype: str  # safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # offset into the data section
    end: int


@dataclass(frozen=True, kw_only=True)
class Header:
    """A validated safetensors header. ``data_start`` is where the tensor bytes begin."""

    tensors: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]
    data_start: int
    data_size: int


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    # bool is an int subclass; a header saying "shape": [true] is malformed.
    return isinstance(value, int) and not isinstance(value, bool)


def parse_header(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    total_size: int | None = None,
) -> Header:
    """Validate the header of ``data`` without reading tensors.

    ``data`` is the whole safetensors buffer, or, with ``total_size``, a prefix of a buffer of
    that many bytes that holds at least the whole header (for checking an upload early).
    """
    view = memoryview(data)
    total = len(view) if total_size is None else total_size
    if len(view) < _HEADER_LEN.size:
        raise _malformed(f"{len(view)} bytes: shorter than the 8-byte header length")
    (header_len,) = _HEADER_LEN.unpack_from(view, 0)
    if header_len > limits.max_header_bytes:
        raise _malformed(f"header length {header_len} exceeds {limits.max_header_bytes}")
    data_start = _HEADER_LEN.size + header_len
    if data_start > len(view):
        raise _malformed(f"header length {header_len} runs past the end ({len(view)} bytes)")
    raw = bytes(view[_HEADER_LEN.size : data_start])
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _malformed(f"header is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _malformed("header is not a JSON object")

    metadata: dict[str, str] = {}
    meta_obj = obj.pop(_METADATA_KEY, None)
    if meta_obj is not None:
        if not isinstance(meta_obj, dict) or len(meta_obj) > limits.max_metadata_entries:
            raise _malformed("__metadata__ must be a small object of strings")
        for key, value in meta_obj.items():
            if not isinstance(value, str) or len(value) > limits.max_metadata_value_len:
                raise _malformed(f"__metadata__[{key!r}] must be a short string")
            metadata[key] = value
    if len(obj) > limits.max_tensors:
        raise _malformed(f"{len(obj)} tensors exceed the limit {limits.max_tensors}")

    infos: list[TensorInfo] = []
    for name, entry in obj.items():
        if not name or len(name) > limits.max_name_len:
            raise _malformed(f"tensor name of length {len(name)} is not allowed")
        if not isinstance(entry, dict) or set(entry) != _TENSOR_KEYS:
            raise _malformed(f"tensor {name!r}: entry must have exactly {sorted(_TENSOR_KEYS)}")
        dtype_name = entry["dtype"]
        if not isinstance(dtype_name, str) or dtype_name not in _DTYPES:
            raise _malformed(f"tensor {name!r}: dtype {dtype_name!r} is not allowed")
        shape = entry["shape"]
        if (
            not isinstance(shape, list)
            or len(shape) > limits.max_rank
            or not all(_is_int(d) and d >= 0 for d in shape)
        ):
            raise _malformed(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
        elements = math.prod(shape)
        if elements > limits.max_elements:
            raise _malformed(f"tensor {name!r}: {elements} elements exceed {limits.max_elements}")
        offsets = entry["data_offsets"]
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(_is_int(o) and o >= 0 for o in offsets)
        ):
            raise _malformed(f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end]")
        begin, end = offsets
        if end - begin != elements * _DTYPES[dtype_name].itemsize:
            raise _malformed(
                f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype_name}"
            )
        infos.append(
            TensorInfo(name=name, dtype=dtype_name, shape=tuple(shape), begin=begin, end=end)
        )

    # Offsets must tile the data section exactly: no gaps, overlaps or trailing bytes.
    data_size = total - data_start
    if data_size < 0:
        raise _malformed(f"header runs past the declared size {total}")
    if data_size > limits.max_total_bytes:
        raise _malformed(f"{data_size} data bytes exceed {limits.max_total_bytes}")
    cursor = 0
    for info in sorted(infos, key=lambda i: (i.begin, i.end)):
        if info.begin != cursor:
            raise _malformed(
                f"tensor {info.name!r} starts at {info.begin}, expected {cursor} (gap or overlap)"
            )
        cursor = info.end
    if cursor != data_size:
        raise _malformed(f"tensors cover {cursor} of {data_size} data bytes")
    return Header(
        tensors=tuple(infos), metadata=metadata, data_start=data_start, data_size=data_size
    )


def header_from_prefix(
    prefix: bytes | bytearray | memoryview,
    *,
    total_size: int,
    limits: Limits = DEFAULT_LIMITS,
) -> Header | None:
    """Check the header of an upload from its first bytes, before the rest arrives.

    Returns None while ``prefix`` is too short to hold the whole header; raises
    UPDATE_MALFORMED as soon as what has arrived (or the declared ``total_size``) is wrong, so
    a server need not store gigabytes behind a hostile header.
    """
    view = memoryview(prefix)
    if total_size < _HEADER_LEN.size:
        raise _malformed(f"declared size {total_size} is shorter than the 8-byte header length")
    if len(view) < _HEADER_LEN.size:
        return None
    (header_len,) = _HEADER_LEN.unpack_from(view, 0)
    if header_len > limits.max_header_bytes:
        raise _malformed(f"header length {header_len} exceeds {limits.max_header_bytes}")
    data_start = _HEADER_LEN.size + header_len
    if data_start > total_size:
        raise _malformed(f"header length {header_len} runs past the declared size {total_size}")
    if len(view) < data_start:
        return None
    return parse_header(view[:data_start], limits=limits, total_size=total_size)


def decode(
    data: bytes | bytearray | memoryview,
    *,
    limits: Limits = DEFAULT_LIMITS,
    copy: bool = True,
) -> Arrays:
    """Parse untrusted safetensors bytes into named arrays.

    With ``copy=False`` the arrays are read-only views into ``data`` (for memory-mapped
    artifacts); the caller keeps ``data`` alive.
    """
    header = parse_header(data, limits=limits)
    view = memoryview(data)
    out: Arrays = {}
    for info in header.tensors:
        start = header.data_start + info.begin
        arr = np.frombuffer(view[start : header.data_start + info.end], dtype=_DTYPES[info.dtype])
        arr = arr.reshape(info.shape)
        out[info.name] = arr.copy() if copy else arr
    return out


def decode_metadata(
    data: bytes | bytearray | memoryview, *, limits: Limits = DEFAULT_LIMITS
) -> dict[str, str]:
    return dict(parse_header(data, limits=limits).metadata)


# --- model specs and update checks ------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    shape: tuple[int, ...]
    dtype: str  # safetensors dtype name, e.g. "F32"

    @property
    def dtype_numpy(self) -> np.dtype[Any]:
        return _DTYPES[self.dtype]


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Names, shapes and dtypes of a model: what every update of a round must match."""

    tensors: Mapping[str, TensorSpec]

    @classmethod
    def of(cls, arrays: Mapping[str, NDArray[Any]]) -> ModelSpec:
        specs: dict[str, TensorSpec] = {}
        for name, array in arrays.items():
            dt = (
                np.dtype(array.dtype).newbyteorder("<")
                if array.dtype.byteorder == ">"
                else array.dtype
            )
            dtype_name = _NAMES_BY_DTYPE.get(np.dtype(dt))
            if dtype_name is None:
                raise _malformed(f"tensor {name!r}: dtype {array.dtype} is not allowed")
            specs[name] = TensorSpec(shape=tuple(int(d) for d in array.shape), dtype=dtype_name)
        return cls(tensors=dict(sorted(specs.items())))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.tensors)

    @property
    def num_elements(self) -> int:
        return sum(math.prod(t.shape) for t in self.tensors.values())


FINITE_BLOCK = 1 << 16  # elements checked at a time by all_finite


def all_finite(array: NDArray[Any], *, scratch: NDArray[np.bool_] | None = None) -> bool:
    """True if every element is finite (always for integer arrays), checked block by block
    so no temporary of the array's size is made; ``scratch`` (FINITE_BLOCK booleans) may be
    passed in to reuse one."""
    if array.dtype.kind != "f":
        return True
    flat = array.reshape(-1)
    mask = np.empty(FINITE_BLOCK, dtype=np.bool_) if scratch is None else scratch
    for start in range(0, flat.size, FINITE_BLOCK):
        block = flat[start : start + FINITE_BLOCK]
        if not bool(np.isfinite(block, out=mask[: block.size]).all()):
            return False
    return True


def _squared_distance(
    array: NDArray[Any], base: NDArray[Any], scratch: NDArray[np.float64]
) -> float:
    """``sum((array - base) ** 2)`` in float64, block by block (no array-sized temporary)."""
    a, g = array.reshape(-1), np.asarray(base).reshape(-1)
    total = 0.0
    for start in range(0, a.size, FINITE_BLOCK):
        d = scratch[: min(FINITE_BLOCK, a.size - start)]
        np.subtract(a[start : start + d.size], g[start : start + d.size], out=d, dtype=np.float64)
        total += float(np.dot(d, d))
    return total


def check_update(
    update: Mapping[str, NDArray[Any]],
    *,
    spec: ModelSpec,
    global_arrays: Mapping[str, NDArray[Any]] | None = None,
    max_norm: float | None = None,
) -> None:
    """Reject an update that does not fit the round's model.

    Order: shape/dtype (UPDATE_SHAPE_MISMATCH), finiteness (UPDATE_NONFINITE), then the L2
    norm of ``update - global`` (UPDATE_NORM_EXCEEDED) when ``max_norm`` is given. Each
    tensor is read from ``update`` once (a lazily decoded update is decoded once), block by
    block, with no tensor-sized temporaries.
    """
    if max_norm is not None and global_arrays is None:
        raise ValueError("max_norm needs global_arrays")
    missing = sorted(set(spec.tensors) - set(update))
    extra = sorted(set(update) - set(spec.tensors))
    differing: list[str] = []
    nonfinite: str | None = None
    mask = np.empty(FINITE_BLOCK, dtype=np.bool_)
    scratch = np.empty(FINITE_BLOCK, dtype=np.float64)
    total = 0.0
    for name, expected in spec.tensors.items():
        if name in missing:
            continue
        array = np.asarray(update[name])
        if ModelSpec.of({name: array}).tensors[name] != expected:
            differing.append(name)
        elif missing or extra or differing or nonfinite is not None:
            continue  # already rejected: only the remaining shapes still matter
        elif not all_finite(array, scratch=mask):
            nonfinite = name
        elif max_norm is not None and global_arrays is not None:
            total += _squared_distance(array, global_arrays[name], scratch)
    if missing or extra or differing:
        raise UpdateRejected(
            f"update does not match the model: missing {missing}, extra {extra}, "
            f"different shape/dtype {differing}",
            reason=Reason.UPDATE_SHAPE_MISMATCH,
        )
    if nonfinite is not None:
        raise UpdateRejected(
            f"tensor {nonfinite!r} holds NaN or infinite values", reason=Reason.UPDATE_NONFINITE
        )
    if max_norm is not None:
        norm = math.sqrt(total)
        if not norm <= max_norm:
            raise UpdateRejected(
                f"update norm {norm:.6g} exceeds the bound {max_norm:.6g}",
                reason=Reason.UPDATE_NORM_EXCEEDED,
            )


__all__ = [
    "DEFAULT_LIMITS",
    "Arrays",
    "EncodedArrays",
    "Header",
    "Limits",
    "ModelSpec",
    "StreamingDigest",
    "TensorInfo",
    "TensorSpec",
    "all_finite",
    "check_update",
    "decode",
    "decode_metadata",
    "digest",
    "encode",
    "encode_pure",
    "encode_stream",
    "header_from_prefix",
    "parse_header",
]
