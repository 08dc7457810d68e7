"""Strict CBOR (RFC 8949) and COSE_Sign1 (RFC 9052) parsing for PSA and CCA tokens.

Attestation tokens are small, definite-length CBOR. This decoder accepts exactly that and
nothing more, so a hostile token cannot make it allocate, recurse or loop without bound:

- input size is bounded by the caller (:data:`MAX_TOKEN_BYTES` by default);
- every declared length is checked against the bytes that remain *before* anything is
  sliced or allocated (an array of n items needs at least n bytes);
- nesting depth is bounded (:data:`MAX_DEPTH`);
- indefinite lengths, reserved additional-information values, floats, undefined and other
  simple values are rejected (no attestation token uses them);
- map keys must be integers or text, and a duplicate key is an error (RFC 8949 §5.6:
  a decoder must not silently pick one of two claims);
- text must be valid UTF-8.

Why not ``cbor2.loads``: it accepts indefinite lengths and duplicate keys silently (the last
one wins), which is exactly what a claim parser must not do. ``cbor2`` remains the encoder
the test helpers use, and the tests cross-check this decoder against it on real tokens.

Parse-only: no crypto here (see :mod:`fedtee.attest.verify._cose`). Every failure is an
:class:`~fedtee.errors.EvidenceFormatError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from fedtee.errors import EvidenceFormatError, Reason

MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 16

COSE_SIGN1_TAG: Final = 18
HEADER_ALG: Final = 1
HEADER_CRIT: Final = 2
# COSE algorithm id -> (name, hash name, field size in bytes of r and s)
ALGORITHMS: Final[Mapping[int, tuple[str, str, int]]] = MappingProxyType(
    {-7: ("ES256", "sha256", 32), -35: ("ES384", "sha384", 48), -36: ("ES512", "sha512", 66)}
)


@dataclass(frozen=True)
class Tagged:
    """A CBOR tag and its content."""

    tag: int
    value: Any


def _error(message: str, reason: Reason = Reason.EVIDENCE_MALFORMED) -> EvidenceFormatError:
    return EvidenceFormatError(f"CBOR: {message}", reason=reason)


class _Decoder:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _error(
                f"item at {self.pos} needs {n} bytes, {len(self.data) - self.pos} remain",
                Reason.EVIDENCE_TRUNCATED,
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def _head(self) -> tuple[int, int, int]:
        start = self.pos
        if start >= len(self.data):
            raise _error(f"item at {start} is missing", Reason.EVIDENCE_TRUNCATED)
        initial = self.data[start]  # hot path: no slice for the initial byte
        self.pos = start + 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info, start
        if info in (24, 25, 26, 27):
            size = 1 << (info - 24)
            return major, int.from_bytes(self._take(size), "big"), start
        if info == 31:
            raise _error(f"indefinite-length item at {start} is not accepted")
        raise _error(f"reserved additional information {info} at {start}")

    def item(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise _error(f"nesting deeper than {MAX_DEPTH}", Reason.EVIDENCE_TOO_LARGE)
        major, arg, start = self._head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return bytes(self._take(arg))
        if major == 3:
            raw = self._take(arg)
            try:
                return bytes(raw).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _error(f"text at {start} is not UTF-8") from exc
        if major == 4:
            self._room(arg, start)
            return tuple(self.item(depth + 1) for _ in range(arg))
        if major == 5:
            self._room(2 * arg, start)
            out: dict[Any, Any] = {}
            for _ in range(arg):
                key_at = self.pos
                key = self.item(depth + 1)
                if isinstance(key, bool) or not isinstance(key, int | str):
                    raise _error(f"map key at {key_at} is {type(key).__name__}, not int or text")
                if key in out:
                    raise _error(f"duplicate map key {key!r} at {key_at}")
                out[key] = self.item(depth + 1)
            return MappingProxyType(out)
        if major == 6:
            return Tagged(arg, self.item(depth + 1))
        # major 7: only false / true / null
        simple = {20: False, 21: True, 22: None}
        if arg in simple and self.data[start] & 0x1F == arg:
            return simple[arg]
        raise _error(f"simple value or float at {start} is not accepted")

    def _room(self, count: int, start: int) -> None:
        # Each item takes at least one byte: refuse counts the remaining input cannot hold,
        # before building anything.
        if count > len(self.data) - self.pos:
            raise _error(
                f"container at {start} declares {count} items, only "
                f"{len(self.data) - self.pos} bytes remain",
                Reason.EVIDENCE_TRUNCATED,
            )


def loads(data: bytes, *, max_size: int = MAX_TOKEN_BYTES) -> Any:
    """Decode exactly one CBOR item from ``data`` (maps come back read-only)."""
    if len(data) > max_size:
        raise _error(f"{len(data)} bytes; the limit is {max_size}", Reason.EVIDENCE_TOO_LARGE)
    if not data:
        raise _error("empty input", Reason.EVIDENCE_TRUNCATED)
    decoder = _Decoder(bytes(data))
    value = decoder.item(0)
    if decoder.pos != len(data):
        raise _error(
            f"{len(data) - decoder.pos} bytes follow the item", Reason.EVIDENCE_TRAILING_DATA
        )
    return value


# --- minimal encoder for Sig_structure ------------------------------------------------------


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([(major << 5) | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([(major << 5) | info]) + value.to_bytes(size, "big")
    raise ValueError("CBOR argument too large")


def _bstr(value: bytes) -> bytes:
    return _head(2, len(value)) + value


def _tstr(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _head(3, len(raw)) + raw


# --- COSE_Sign1 -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CoseSign1:
    """A parsed COSE_Sign1. ``protected_raw`` and ``payload`` are the exact signed bytes."""

    tagged: bool
    protected_raw: bytes
    protected: Mapping[Any, Any]
    unprotected: Mapping[Any, Any]
    payload: bytes
    signature: bytes
    alg: int

    @property
    def alg_name(self) -> str:
        return ALGORITHMS[self.alg][0]

    def to_be_signed(self) -> bytes:
        """The Sig_structure ``["Signature1", protected, h'', payload]`` (RFC 9052 §4.4)."""
        return (
            _head(4, 4)
            + _tstr("Signature1")
            + _bstr(self.protected_raw)
            + _bstr(b"")
            + _bstr(self.payload)
        )


def _field(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise EvidenceFormatError(
            f"COSE_Sign1 {what} is {type(value).__name__}, expected {kind.__name__}",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    return value


def sign1_from_item(item: Any, *, require_tag: bool = False) -> CoseSign1:
    """A decoded CBOR item -> :class:`CoseSign1` (tag 18 optional unless required)."""
    tagged = isinstance(item, Tagged)
    if tagged:
        if item.tag != COSE_SIGN1_TAG:
            raise EvidenceFormatError(
                f"CBOR tag {item.tag}; a COSE_Sign1 has tag {COSE_SIGN1_TAG}",
                reason=Reason.EVIDENCE_FIELD_INVALID,
            )
        item = item.value
    elif require_tag:
        raise EvidenceFormatError("COSE_Sign1 tag 18 is missing", reason=Reason.EVIDENCE_MALFORMED)
    if not isinstance(item, tuple) or len(item) != 4:
        raise EvidenceFormatError(
            "COSE_Sign1 is not an array of 4 items", reason=Reason.EVIDENCE_MALFORMED
        )
    protected_raw = _field(item[0], bytes, "protected header")
    unprotected = _field(item[1], Mapping, "unprotected header")
    if item[2] is None:
        raise EvidenceFormatError(
            "COSE_Sign1 has a detached payload", reason=Reason.EVIDENCE_MALFORMED
        )
    payload = _field(item[2], bytes, "payload")
    signature = _field(item[3], bytes, "signature")
    protected: Mapping[Any, Any] = MappingProxyType({})
    if protected_raw:
        protected = _field(loads(protected_raw), Mapping, "protected header map")
    if HEADER_CRIT in protected:
        raise EvidenceFormatError(
            "COSE_Sign1 names critical headers this verifier does not know",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    if HEADER_ALG in unprotected:
        raise EvidenceFormatError(
            "COSE_Sign1 alg must be in the protected header", reason=Reason.EVIDENCE_FIELD_INVALID
        )
    alg = protected.get(HEADER_ALG)
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in ALGORITHMS:
        raise EvidenceFormatError(
            f"COSE_Sign1 alg {alg!r}; supported: ES256 (-7), ES384 (-35), ES512 (-36)",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    size = ALGORITHMS[alg][2]
    if len(signature) != 2 * size:
        raise EvidenceFormatError(
            f"{ALGORITHMS[alg][0]} signature is {len(signature)} bytes, expected {2 * size}",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    return CoseSign1(
        tagged=tagged,
        protected_raw=protected_raw,
        protected=protected,
        unprotected=unprotected,
        payload=payload,
        signature=signature,
        alg=alg,
    )


def parse_sign1(data: bytes, *, require_tag: bool = False) -> CoseSign1:
    """Bytes of a (tagged) COSE_Sign1 -> :class:`CoseSign1`."""
    return sign1_from_item(loads(data), require_tag=require_tag)


def claims_map(sign1: CoseSign1, what: str) -> Mapping[Any, Any]:
    """The payload of ``sign1`` decoded as a claims map."""
    claims = loads(sign1.payload)
    if not isinstance(claims, Mapping):
        raise EvidenceFormatError(
            f"{what} payload is not a CBOR map", reason=Reason.EVIDENCE_MALFORMED
        )
    return claims


def to_json(value: Any) -> Any:
    """A decoded CBOR value -> JSON-friendly (bytes as lower-case hex, keys as text)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [to_json(v) for v in value]
    if isinstance(value, Tagged):
        return {"tag": value.tag, "value": to_json(value.value)}
    return value


__all__ = [
    "ALGORITHMS",
    "MAX_TOKEN_BYTES",
    "CoseSign1",
    "Tagged",
    "claims_map",
    "loads",
    "parse_sign1",
    "sign1_from_item",
    "to_json",
]
