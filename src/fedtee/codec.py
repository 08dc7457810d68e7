"""Compressed model updates: float16, int8 with a per-tensor scale, top-k, and combinations.

Both sides use this module (pure numpy; an IoT client imports nothing else for it).

What is encoded is the **delta** of each floating-point tensor against the round's global
model, which both sides hold (the receipt names its digest): ``update = global + delta``.
Quantising a delta loses far less than quantising the weights themselves, and top-k of a
delta is what sparsification means. Integer tensors travel unchanged.

The encoded form is itself a safetensors container, so the server's strict header reader,
its early header check while streaming and its digest apply unchanged, and **the digest and
the receipt cover exactly the bytes sent**. The encoding's name is written into the
container's ``__metadata__`` (``fedtee.encoding``) as well as into ``UpdateHeader.encoding``;
the server requires both to agree, so the name is covered by the signed digest and cannot be
swapped in transit. Per floating-point tensor ``name`` (shape S, n elements, model dtype D):

=============  =====================================================================
encoding       tensors in the container
=============  =====================================================================
safetensors    ``name`` D S (the update itself, no delta; the default)
f16            ``name`` F16 S
int8           ``name`` I8 S, ``name#scale`` F32 [1]; delta = q * scale, q in -127..127
topk           ``name#idx`` I32 [k], ``name#val`` D [k]; indices strictly increasing, < n
topk+f16       ``name#idx`` I32 [k], ``name#val`` F16 [k]
topk+int8      ``name#idx`` I32 [k], ``name#val`` I8 [k], ``name#scale`` F32 [1]
=============  =====================================================================

Reading (:func:`open_update`) checks the layout against the global model's spec before any
tensor is touched: exactly the expected names, dtypes and shapes, ``k <= n``. Every size is
derived from the global model, never from the peer, so a "decompression bomb" cannot exist:
the decoded update is always exactly model-sized, and :func:`max_encoded_size` bounds the
bytes a server accepts for an encoding before it reads them. Tensors are decoded lazily, one
at a time, straight from the received bytes, so aggregation folds an encoded update into its
accumulator without ever holding a second decoded model. Index ranges, ordering, scales and
finiteness are checked as each tensor is decoded; every violation is an
:class:`~fedtee.errors.UpdateRejected` with a stable reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee.errors import Reason, UpdateRejected
from fedtee.tensors import (
    DEFAULT_LIMITS,
    Header,
    Limits,
    ModelSpec,
    TensorSpec,
    decode,
    encode_pure,
    parse_header,
)

ENCODING_KEY = "fedtee.encoding"
SEP = "#"
INT8_MAX = 127
DEFAULT_TOPK_FRACTION = 0.01


class Encoding(StrEnum):
    """How an update's bytes are encoded (``UpdateHeader.encoding``)."""

    SAFETENSORS = "safetensors"
    F16 = "f16"
    INT8 = "int8"
    TOPK = "topk"
    TOPK_F16 = "topk+f16"
    TOPK_INT8 = "topk+int8"

    @property
    def sparse(self) -> bool:
        return self in (Encoding.TOPK, Encoding.TOPK_F16, Encoding.TOPK_INT8)

    @property
    def quantised(self) -> bool:
        return self in (Encoding.INT8, Encoding.TOPK_INT8)


def _malformed(message: str) -> UpdateRejected:
    return UpdateRejected(message, reason=Reason.UPDATE_MALFORMED)


def parse_encoding(name: str) -> Encoding:
    """The encoding called ``name`` ("" is the plain safetensors default)."""
    if name == "":
        return Encoding.SAFETENSORS
    try:
        return Encoding(name)
    except ValueError:
        raise _malformed(f"update encoding {name[:32]!r} is not supported") from None


def _is_float(spec: TensorSpec) -> bool:
    return spec.dtype_numpy.kind == "f"


def _value_dtype(encoding: Encoding, model_dtype: str) -> str:
    if encoding in (Encoding.F16, Encoding.TOPK_F16):
        return "F16"
    if encoding.quantised:
        return "I8"
    return model_dtype


# name in the container -> (dtype, shape); a shape of None means [k] with 0 <= k <= n.
_Layout = dict[str, tuple[str, tuple[int, ...] | None]]


def _layout(encoding: Encoding, spec: ModelSpec) -> _Layout:
    out: _Layout = {}

    def put(key: str, dtype: str, shape: tuple[int, ...] | None) -> None:
        if key in out:
            raise _malformed(f"model tensor names collide in the {encoding} layout at {key!r}")
        out[key] = (dtype, shape)

    for name, t in spec.tensors.items():
        if encoding is Encoding.SAFETENSORS or not _is_float(t):
            put(name, t.dtype, t.shape)
            continue
        value = _value_dtype(encoding, t.dtype)
        if encoding.sparse:
            put(name + SEP + "idx", "I32", None)
            put(name + SEP + "val", value, None)
        else:
            put(name, value, t.shape)
        if encoding.quantised:
            put(name + SEP + "scale", "F32", (1,))
    return out


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}


def max_encoded_size(
    encoding: Encoding, spec: ModelSpec, *, limits: Limits = DEFAULT_LIMITS
) -> int:
    """The most bytes an update of ``spec`` can take in ``encoding`` (header included)."""
    total = 8 + limits.max_header_bytes
    for name, t in spec.tensors.items():
        n = math.prod(t.shape)
        if encoding is Encoding.SAFETENSORS or not _is_float(t):
            total += n * _ITEMSIZE[t.dtype]
            continue
        value = _ITEMSIZE[_value_dtype(encoding, t.dtype)]
        total += n * (value + 4) if encoding.sparse else n * value
        if encoding.quantised:
            total += 4
        del name
    return total


# --- encoding (client) --------------------------------------------------------------------


def _quantise(delta: NDArray[Any]) -> tuple[NDArray[np.int8], NDArray[np.float32]]:
    peak = float(np.max(np.abs(delta))) if delta.size else 0.0
    scale = np.float32(peak / INT8_MAX)
    if not math.isfinite(float(scale)):
        raise UpdateRejected("update delta is not finite", reason=Reason.UPDATE_NONFINITE)
    if scale == 0:
        return np.zeros(delta.shape, dtype=np.int8), np.zeros(1, dtype=np.float32)
    q = np.clip(np.rint(delta / scale), -INT8_MAX, INT8_MAX).astype(np.int8)
    return q, np.array([scale], dtype=np.float32)


def _to_f16(delta: NDArray[Any], name: str) -> NDArray[np.float16]:
    with np.errstate(over="ignore"):
        out = delta.astype(np.float16)
    if not bool(np.isfinite(out).all()):
        raise UpdateRejected(
            f"tensor {name!r}: delta is outside the float16 range", reason=Reason.UPDATE_NONFINITE
        )
    return out


def encode_update(
    update: Mapping[str, NDArray[Any]],
    *,
    global_arrays: Mapping[str, NDArray[Any]],
    encoding: Encoding,
    topk_fraction: float = DEFAULT_TOPK_FRACTION,
) -> bytes:
    """The bytes to send (and to digest and sign) for ``update`` in ``encoding``."""
    if not 0.0 < topk_fraction <= 1.0:
        raise ValueError("topk_fraction must be in (0, 1]")
    if encoding is Encoding.SAFETENSORS:
        return encode_pure(update)
    spec = ModelSpec.of(global_arrays)
    if ModelSpec.of(update).tensors != spec.tensors:
        raise UpdateRejected(
            "update does not match the global model", reason=Reason.UPDATE_SHAPE_MISMATCH
        )
    out: dict[str, NDArray[Any]] = {}
    for name, t in spec.tensors.items():
        new = np.asarray(update[name])
        if not _is_float(t):
            out[name] = new
            continue
        delta = (new - np.asarray(global_arrays[name])).astype(t.dtype_numpy, copy=False)
        if not bool(np.isfinite(delta).all()):
            raise UpdateRejected(
                f"tensor {name!r}: update is not finite", reason=Reason.UPDATE_NONFINITE
            )
        if encoding.sparse:
            flat = delta.ravel()
            k = min(flat.size, max(1, math.ceil(topk_fraction * flat.size)))
            idx = np.sort(np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :])
            out[name + SEP + "idx"] = idx.astype(np.int32)
            values = flat[idx]
        else:
            values = delta
        if encoding.quantised:
            q, scale = _quantise(values)
            out[name + SEP + "val" if encoding.sparse else name] = q
            out[name + SEP + "scale"] = scale
        elif encoding in (Encoding.F16, Encoding.TOPK_F16):
            out[name + SEP + "val" if encoding.sparse else name] = _to_f16(values, name)
        else:
            out[name + SEP + "val"] = values
    return encode_pure(out, metadata={ENCODING_KEY: encoding.value})


# --- decoding (server) --------------------------------------------------------------------


class EncodedUpdate(Mapping[str, NDArray[Any]]):
    """A validated encoded update; each tensor is decoded (and checked) when it is read.

    Reading a tensor allocates only that tensor, in the model's dtype. The object keeps a
    reference to the received bytes (and to the global model): keep it no longer than needed.
    """

    def __init__(
        self,
        *,
        data: memoryview,
        header: Header,
        encoding: Encoding,
        spec: ModelSpec,
        global_arrays: Mapping[str, NDArray[Any]],
    ) -> None:
        self.encoding = encoding
        self._data = data
        self._spec = spec
        self._global = global_arrays
        self._infos = {i.name: i for i in header.tensors}
        self._start = header.data_start

    def __len__(self) -> int:
        return len(self._spec.tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(self._spec.tensors)

    def _raw(self, key: str) -> NDArray[Any]:
        info = self._infos[key]
        dtype = TensorSpec(shape=info.shape, dtype=info.dtype).dtype_numpy
        view = self._data[self._start + info.begin : self._start + info.end]
        return np.frombuffer(view, dtype=dtype).reshape(info.shape)

    def _scale(self, name: str) -> float:
        scale = float(self._raw(name + SEP + "scale")[0])
        if not (math.isfinite(scale) and scale >= 0.0):
            raise _malformed(
                f"tensor {name!r}: scale {scale!r} is not a finite non-negative number"
            )
        return scale

    def _values(self, name: str, raw: NDArray[Any], dtype: np.dtype[Any]) -> NDArray[Any]:
        if self.encoding.quantised:
            if bool((raw == -INT8_MAX - 1).any()):
                raise _malformed(f"tensor {name!r}: quantised value -128 is outside -127..127")
            scaled: NDArray[Any] = raw.astype(dtype)
            with np.errstate(over="ignore", invalid="ignore"):  # caught by the finite check
                scaled *= dtype.type(self._scale(name))
            return scaled
        return raw.astype(dtype, copy=False)

    def __getitem__(self, name: str) -> NDArray[Any]:
        t = self._spec.tensors[name]  # KeyError for names the model does not have
        if self.encoding is Encoding.SAFETENSORS or not _is_float(t):
            return self._raw(name)
        dtype = t.dtype_numpy
        base = np.asarray(self._global[name], dtype=dtype)
        if self.encoding.sparse:
            idx = self._raw(name + SEP + "idx")
            n = base.size
            if idx.size and (int(idx[0]) < 0 or int(idx[-1]) >= n):
                raise _malformed(f"tensor {name!r}: a top-k index is outside 0..{n - 1}")
            if idx.size > 1 and not bool((np.diff(idx) > 0).all()):
                raise _malformed(f"tensor {name!r}: top-k indices are not strictly increasing")
            values = self._values(name, self._raw(name + SEP + "val"), dtype)
            out = base.copy()
            with np.errstate(over="ignore", invalid="ignore"):
                out.reshape(-1)[idx] += values
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                out = base + self._values(name, self._raw(name), dtype)
        if not bool(np.isfinite(out).all()):
            raise UpdateRejected(
                f"tensor {name!r} holds NaN or infinite values after decoding",
                reason=Reason.UPDATE_NONFINITE,
            )
        return out

    def validate(self) -> None:
        """Decode every tensor once (one at a time) so every check has run."""
        for name in self:
            self[name]


def open_update(
    data: bytes | bytearray | memoryview,
    *,
    spec: ModelSpec,
    global_arrays: Mapping[str, NDArray[Any]],
    encoding: Encoding | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Mapping[str, NDArray[Any]]:
    """The update held in ``data``, as named arrays matching ``spec``.

    The encoding is read from the signed bytes; with ``encoding`` (what the upload's header
    declared) the two must agree. A plain safetensors update is returned as read-only views
    into ``data``; an encoded one as an :class:`EncodedUpdate` that decodes lazily.
    """
    view = memoryview(data)
    header = parse_header(view, limits=limits)
    found = parse_encoding(header.metadata.get(ENCODING_KEY, ""))
    if encoding is not None and found is not encoding:
        raise _malformed(
            f"upload declared encoding {encoding.value!r}; its bytes say {found.value!r}"
        )
    if found is Encoding.SAFETENSORS:
        arrays = decode(view, limits=limits, copy=False)
        if ModelSpec.of(arrays).tensors != spec.tensors:
            raise UpdateRejected(
                "update does not match the model's names, shapes and dtypes",
                reason=Reason.UPDATE_SHAPE_MISMATCH,
            )
        return arrays
    if set(header.metadata) != {ENCODING_KEY}:
        raise _malformed(f"unexpected metadata keys {sorted(header.metadata)[:8]}")
    expected = _layout(found, spec)
    infos = {i.name: i for i in header.tensors}
    if set(infos) != set(expected):
        missing = sorted(set(expected) - set(infos))[:8]
        extra = sorted(set(infos) - set(expected))[:8]
        raise UpdateRejected(
            f"{found.value} update does not match the model: missing {missing}, extra {extra}",
            reason=Reason.UPDATE_SHAPE_MISMATCH,
        )
    for key, (dtype, shape) in expected.items():
        info = infos[key]
        if info.dtype != dtype:
            raise UpdateRejected(
                f"{key!r} is {info.dtype}, expected {dtype}", reason=Reason.UPDATE_SHAPE_MISMATCH
            )
        if shape is not None and info.shape != shape:
            raise UpdateRejected(
                f"{key!r} has shape {list(info.shape)}, expected {list(shape)}",
                reason=Reason.UPDATE_SHAPE_MISMATCH,
            )
    if found.sparse:
        for name, t in spec.tensors.items():
            if not _is_float(t):
                continue
            idx, val = infos[name + SEP + "idx"], infos[name + SEP + "val"]
            n = math.prod(t.shape)
            if len(idx.shape) != 1 or idx.shape != val.shape or idx.shape[0] > n:
                raise _malformed(
                    f"tensor {name!r}: top-k shapes {list(idx.shape)} / {list(val.shape)} "
                    f"are not [k] with k <= {n}"
                )
    return EncodedUpdate(
        data=view, header=header, encoding=found, spec=spec, global_arrays=global_arrays
    )


__all__ = [
    "DEFAULT_TOPK_FRACTION",
    "ENCODING_KEY",
    "EncodedUpdate",
    "Encoding",
    "encode_update",
    "max_encoded_size",
    "open_update",
    "parse_encoding",
]
