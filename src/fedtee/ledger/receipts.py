"""Training receipts: what a client signs with its TEE-bound key about each update it sends.

Canonical encoding: a deterministic CBOR map (RFC 8949 section 4.2.1, by the small pure-Python
codec in :mod:`fedtee.ledger._cbor`, so IoT clients need no CBOR library) with text keys and a
version field ``"v": 1``. Decoding is strict: bounded size, exactly the
known keys, typed values, and the bytes must re-encode to themselves, so one receipt has one
encoding and a signature over it cannot be carried over to a differently-spelled copy.

Signatures: DER ECDSA P-256 / SHA-256 over ``SIGNING_DOMAIN || canonical bytes`` with the
client's identity key (:mod:`fedtee.identity`).

Checks a server makes, each with its own reason:
``verify_receipt`` -> RECEIPT_MALFORMED / RECEIPT_SIGNATURE_INVALID;
``check_receipt`` -> RECEIPT_FEDERATION_MISMATCH, RECEIPT_ROUND_MISMATCH,
RECEIPT_CLIENT_MISMATCH, RECEIPT_MODEL_MISMATCH, UPDATE_DIGEST_MISMATCH,
RECEIPT_MEASUREMENT_MISMATCH.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedtee import identity
from fedtee.errors import Reason, UpdateRejected, VerificationError
from fedtee.ledger import _cbor

VERSION = 1
SIGNING_DOMAIN = b"fedtee/v1/receipt\x00"
MAX_RECEIPT_BYTES = 16 * 1024
MAX_ID_LEN = 256
MAX_MEASUREMENT_BYTES = 128
MAX_METRICS = 64
MAX_METRIC_NAME_LEN = 64
DIGEST_BYTES = 32
_U63 = (1 << 63) - 1

_FIELDS = frozenset(
    {
        "v",
        "federation_id",
        "round",
        "client_id",
        "global_model_digest",
        "update_digest",
        "num_examples",
        "measurement",
        "metrics",
        "created_unix_ms",
    }
)


def _malformed(message: str) -> UpdateRejected:
    return UpdateRejected(message, reason=Reason.RECEIPT_MALFORMED)


def _check_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _U63:
        raise _malformed(f"{name} must be an integer in 0..2^63-1, got {value!r}")


def _check_id(name: str, value: Any) -> None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_LEN:
        raise _malformed(f"{name} must be a non-empty string of at most {MAX_ID_LEN} chars")


def _check_digest(name: str, value: Any) -> None:
    if not isinstance(value, bytes) or len(value) != DIGEST_BYTES:
        raise _malformed(f"{name} must be {DIGEST_BYTES} bytes")


@dataclass(frozen=True, kw_only=True)
class Receipt:
    """A client's statement about one update. Validates itself when built."""

    federation_id: str
    round: int
    client_id: str
    global_model_digest: bytes  # SHA-256 of the global model's safetensors bytes it received
    update_digest: bytes  # SHA-256 of the update's safetensors bytes it sent
    num_examples: int
    measurement: bytes  # the client's code_identity from its verified evidence
    metrics: Mapping[str, float] = field(default_factory=dict)
    created_unix_ms: int = 0

    def __post_init__(self) -> None:
        _check_id("federation_id", self.federation_id)
        _check_int("round", self.round)
        _check_id("client_id", self.client_id)
        _check_digest("global_model_digest", self.global_model_digest)
        _check_digest("update_digest", self.update_digest)
        _check_int("num_examples", self.num_examples)
        _check_int("created_unix_ms", self.created_unix_ms)
        if not isinstance(self.measurement, bytes) or not (
            0 < len(self.measurement) <= MAX_MEASUREMENT_BYTES
        ):
            raise _malformed(f"measurement must be 1..{MAX_MEASUREMENT_BYTES} bytes")
        if not isinstance(self.metrics, Mapping) or len(self.metrics) > MAX_METRICS:
            raise _malformed(f"metrics must be a mapping of at most {MAX_METRICS} entries")
        normalised: dict[str, float] = {}
        for key, value in self.metrics.items():
            if not isinstance(key, str) or not 0 < len(key) <= MAX_METRIC_NAME_LEN:
                raise _malformed(f"metric name {key!r} is not a short string")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _malformed(f"metric {key!r} is not a number")
            if not math.isfinite(value):
                raise _malformed(f"metric {key!r} is not finite")
            normalised[key] = float(value)
        # Sorted and float-typed, so equal receipts encode identically.
        object.__setattr__(self, "metrics", dict(sorted(normalised.items())))

    def encode(self) -> bytes:
        """The canonical bytes that get signed."""
        return _cbor.encode(
            {
                "v": VERSION,
                "federation_id": self.federation_id,
                "round": self.round,
                "client_id": self.client_id,
                "global_model_digest": self.global_model_digest,
                "update_digest": self.update_digest,
                "num_examples": self.num_examples,
                "measurement": self.measurement,
                "metrics": dict(self.metrics),
                "created_unix_ms": self.created_unix_ms,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Receipt:
        """Strictly parse canonical receipt bytes (RECEIPT_MALFORMED otherwise)."""
        if not isinstance(data, bytes) or len(data) > MAX_RECEIPT_BYTES:
            raise _malformed(f"receipt must be bytes of at most {MAX_RECEIPT_BYTES}")
        try:
            obj = _cbor.decode(data)
        except _cbor.CborError as exc:
            raise _malformed(f"receipt is not CBOR: {exc}") from exc
        if not isinstance(obj, dict):
            raise _malformed("receipt is not a CBOR map")
        keys = set(obj)
        if keys != _FIELDS:
            raise _malformed(
                f"receipt fields: unknown {sorted(map(str, keys - _FIELDS))}, "
                f"missing {sorted(_FIELDS - keys)}"
            )
        if obj["v"] != VERSION or isinstance(obj["v"], bool):
            raise _malformed(f"receipt version {obj['v']!r} is not supported (want {VERSION})")
        metrics = obj["metrics"]
        if not isinstance(metrics, dict) or not all(isinstance(v, float) for v in metrics.values()):
            raise _malformed("metrics must be a map of floats")
        receipt = cls(
            federation_id=obj["federation_id"],
            round=obj["round"],
            client_id=obj["client_id"],
            global_model_digest=obj["global_model_digest"],
            update_digest=obj["update_digest"],
            num_examples=obj["num_examples"],
            measurement=obj["measurement"],
            metrics=metrics,
            created_unix_ms=obj["created_unix_ms"],
        )
        if receipt.encode() != data:
            raise _malformed("receipt is not in canonical encoding")
        return receipt


@dataclass(frozen=True, kw_only=True)
class SignedReceipt:
    """Canonical receipt bytes and the identity key's signature over them (as on the wire)."""

    receipt: bytes
    signature: bytes

    def to_cbor(self) -> bytes:
        """One self-contained blob (used by the ledger to hash a receipt)."""
        return _cbor.encode({"receipt": self.receipt, "signature": self.signature})


def receipt_hash(signed: SignedReceipt) -> bytes:
    """SHA-256 naming one signed receipt (what aggregation records point at)."""
    return hashlib.sha256(signed.to_cbor()).digest()


def sign_receipt(receipt: Receipt, private_key: identity.PrivateKey) -> SignedReceipt:
    body = receipt.encode()
    return SignedReceipt(
        receipt=body,
        signature=identity.sign(private_key, domain=SIGNING_DOMAIN, message=body),
    )


def verify_receipt(signed: SignedReceipt, public_key: identity.PublicKey | bytes) -> Receipt:
    """Check the signature first, then parse (signature over garbage is still garbage).

    ``public_key`` may be the DER SPKI bytes the client enrolled with.
    """
    if isinstance(public_key, bytes):
        try:
            public_key = identity.load_public_key(public_key)
        except VerificationError as exc:
            raise UpdateRejected(
                f"enrolled key is unusable: {exc.message}",
                reason=Reason.RECEIPT_SIGNATURE_INVALID,
            ) from exc
    if len(signed.receipt) > MAX_RECEIPT_BYTES:
        raise _malformed(f"receipt of {len(signed.receipt)} bytes exceeds {MAX_RECEIPT_BYTES}")
    if not identity.verify(
        public_key, domain=SIGNING_DOMAIN, message=signed.receipt, signature=signed.signature
    ):
        raise UpdateRejected(
            "receipt signature does not verify under the client's enrolled key",
            reason=Reason.RECEIPT_SIGNATURE_INVALID,
        )
    return Receipt.decode(signed.receipt)


def check_receipt(
    receipt: Receipt,
    *,
    federation_id: str,
    round: int,  # shadows the builtin on purpose: the domain's word
    client_id: str,
    global_model_digest: bytes,
    update_digest: bytes,
    measurement: bytes,
) -> None:
    """Raise with the specific reason for the first field that does not match."""
    checks: tuple[tuple[bool, Reason, str, object, object], ...] = (
        (
            receipt.federation_id == federation_id,
            Reason.RECEIPT_FEDERATION_MISMATCH,
            "federation_id",
            receipt.federation_id,
            federation_id,
        ),
        (receipt.round == round, Reason.RECEIPT_ROUND_MISMATCH, "round", receipt.round, round),
        (
            receipt.client_id == client_id,
            Reason.RECEIPT_CLIENT_MISMATCH,
            "client_id",
            receipt.client_id,
            client_id,
        ),
        (
            hmac.compare_digest(receipt.global_model_digest, global_model_digest),
            Reason.RECEIPT_MODEL_MISMATCH,
            "global_model_digest",
            receipt.global_model_digest.hex(),
            global_model_digest.hex(),
        ),
        (
            hmac.compare_digest(receipt.update_digest, update_digest),
            Reason.UPDATE_DIGEST_MISMATCH,
            "update_digest",
            receipt.update_digest.hex(),
            update_digest.hex(),
        ),
        (
            hmac.compare_digest(receipt.measurement, measurement),
            Reason.RECEIPT_MEASUREMENT_MISMATCH,
            "measurement",
            receipt.measurement.hex(),
            measurement.hex(),
        ),
    )
    for ok, reason, name, found, expected in checks:
        if not ok:
            raise UpdateRejected(f"receipt {name} is {found}, expected {expected}", reason=reason)


__all__ = [
    "SIGNING_DOMAIN",
    "VERSION",
    "Receipt",
    "SignedReceipt",
    "check_receipt",
    "receipt_hash",
    "sign_receipt",
    "verify_receipt",
]
