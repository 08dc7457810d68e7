"""COSE_Sign1 signature checks and EC key decoding shared by the PSA and CCA verifiers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fedtee.attest.evidence import cose
from fedtee.errors import EvidenceFormatError, Reason

# COSE alg -> (curve, hash)
_ALGS: Final[Mapping[int, tuple[type[ec.EllipticCurve], type[hashes.HashAlgorithm]]]] = {
    -7: (ec.SECP256R1, hashes.SHA256),
    -35: (ec.SECP384R1, hashes.SHA384),
    -36: (ec.SECP521R1, hashes.SHA512),
}
# uncompressed point size -> curve
_POINT_SIZES: Final[Mapping[int, type[ec.EllipticCurve]]] = {
    65: ec.SECP256R1,
    97: ec.SECP384R1,
    133: ec.SECP521R1,
}
# COSE_Key crv -> curve (RFC 9053 §7.1)
_COSE_CURVES: Final[Mapping[int, type[ec.EllipticCurve]]] = {
    1: ec.SECP256R1,
    2: ec.SECP384R1,
    3: ec.SECP521R1,
}


def verify_sign1(sign1: cose.CoseSign1, key: Any) -> bool:
    """True if ``key`` (an EC public key on the alg's curve) made ``sign1``'s signature."""
    curve, digest = _ALGS[sign1.alg]
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve):
        return False
    half = len(sign1.signature) // 2
    r = int.from_bytes(sign1.signature[:half], "big")
    s = int.from_bytes(sign1.signature[half:], "big")
    try:
        key.verify(encode_dss_signature(r, s), sign1.to_be_signed(), ec.ECDSA(digest()))
    except InvalidSignature:
        return False
    return True


def raw_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The uncompressed SEC1 point of ``key`` (what PSA instance ids hash)."""
    return key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def decode_ec_key(data: bytes, what: str) -> ec.EllipticCurvePublicKey:
    """A raw uncompressed point or a CBOR COSE_Key (kty EC2) -> EC public key."""
    curve: type[ec.EllipticCurve] | None = None
    point = data
    if data[:1] == b"\x04" and len(data) in _POINT_SIZES:
        curve = _POINT_SIZES[len(data)]
    else:
        cose_key = cose.loads(data)
        if isinstance(cose_key, Mapping) and cose_key.get(1) == 2:
            curve = _COSE_CURVES.get(cose_key.get(-1))  # type: ignore[arg-type]
            x, y = cose_key.get(-2), cose_key.get(-3)
            if curve is not None and isinstance(x, bytes) and isinstance(y, bytes):
                point = b"\x04" + x + y
            else:
                curve = None
    if curve is None:
        raise EvidenceFormatError(
            f"{what} is neither an uncompressed EC point nor an EC2 COSE_Key",
            reason=Reason.EVIDENCE_FIELD_INVALID,
        )
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve(), point)
    except ValueError as exc:
        raise EvidenceFormatError(
            f"{what} is not a point on {curve.name}", reason=Reason.EVIDENCE_FIELD_INVALID
        ) from exc


__all__ = ["decode_ec_key", "raw_point", "verify_sign1"]
