"""A small deterministic CBOR codec for receipts (RFC 8949 section 4.2.1, core deterministic).

Receipts are signed on IoT clients, which may import only numpy, grpcio, protobuf and
cryptography (DESIGN.md), so this codec is pure Python. It covers exactly what receipts use:
unsigned and negative integers, byte strings, text strings, floats and maps with text keys.

Encoding rules (the "deterministic" profile): shortest integer and length heads, floats in the
shortest of half/single/double that keeps the value, definite lengths only, map keys sorted by
the bytes of their encodings. The decoder is strict: it accepts only what the encoder would
produce for the same value (non-shortest heads, indefinite lengths, tags, unsorted or
duplicate keys, non-finite floats and trailing bytes are errors), never reads past the input,
and bounds nesting.
"""

from __future__ import annotations

import math
import struct
from typing import Any

MAX_DEPTH = 4

_UINT, _NINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_FLOAT_FORMATS = ((25, ">e", 2), (26, ">f", 4), (27, ">d", 8))


class CborError(ValueError):
    """Input is not deterministic CBOR of the supported subset."""


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise CborError(f"integer {value} does not fit in 64 bits")


def _float(value: float) -> bytes:
    if not math.isfinite(value):
        raise CborError("non-finite floats are not encoded")
    for info, fmt, _size in _FLOAT_FORMATS:
        try:
            packed = struct.pack(fmt, value)
        except (OverflowError, struct.error):
            continue
        if struct.unpack(fmt, packed)[0] == value:
            return bytes([_SIMPLE << 5 | info]) + packed
    raise CborError(f"float {value!r} cannot be encoded")  # unreachable for finite floats


def encode(value: Any) -> bytes:
    if isinstance(value, bool) or value is None:
        raise CborError(f"{type(value).__name__} is not in the supported subset")
    if isinstance(value, int):
        return _head(_UINT, value) if value >= 0 else _head(_NINT, -1 - value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, bytes):
        return _head(_BYTES, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(_TEXT, len(raw)) + raw
    if isinstance(value, dict):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise CborError("map keys must be text")
            items.append((encode(key), encode(item)))
        items.sort(key=lambda kv: kv[0])
        return _head(_MAP, len(items)) + b"".join(k + v for k, v in items)
    raise CborError(f"{type(value).__name__} is not in the supported subset")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise CborError(f"needs {n} bytes at offset {self.pos}; input ends first")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def head(self) -> tuple[int, int, int]:
        first = self.take(1)[0]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info, info
        if major == _SIMPLE:
            return major, info, 0
        sizes = {24: 1, 25: 2, 26: 4, 27: 8}
        if info not in sizes:
            raise CborError(f"additional info {info} (indefinite or reserved) is not allowed")
        value = int.from_bytes(self.take(sizes[info]), "big")
        if _head(major, value) != bytes([first]) + value.to_bytes(sizes[info], "big"):
            raise CborError(f"integer head at offset {self.pos} is not in shortest form")
        return major, info, value

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise CborError("nesting too deep")
        major, info, value = self.head()
        if major == _UINT:
            return value
        if major == _NINT:
            return -1 - value
        if major == _BYTES:
            return self.take(value)
        if major == _TEXT:
            try:
                return self.take(value).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise CborError("text string is not UTF-8") from exc
        if major == _MAP:
            out: dict[str, Any] = {}
            last = b""
            for _ in range(value):
                start = self.pos
                key = self.item(depth + 1)
                if not isinstance(key, str):
                    raise CborError("map keys must be text")
                encoded_key = self.data[start : self.pos]
                if encoded_key <= last:
                    raise CborError(f"map key {key!r} is duplicated or out of order")
                last = encoded_key
                out[key] = self.item(depth + 1)
            return out
        if major == _SIMPLE:
            for fmt_info, fmt, size in _FLOAT_FORMATS:
                if info == fmt_info:
                    number = float(struct.unpack(fmt, self.take(size))[0])
                    if _float(number) != bytes([_SIMPLE << 5 | info]) + struct.pack(fmt, number):
                        raise CborError("float is not in its shortest form")
                    return number
            raise CborError(f"simple value {info} is not in the supported subset")
        raise CborError(f"major type {major} (arrays, tags) is not in the supported subset")


def decode(data: bytes) -> Any:
    reader = _Reader(data)
    value = reader.item(0)
    if reader.pos != len(data):
        raise CborError(f"{len(data) - reader.pos} trailing bytes")
    return value


__all__ = ["CborError", "decode", "encode"]
