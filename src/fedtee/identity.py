"""Identity keys: ECDSA P-256, created inside the TEE and bound to its evidence.

The public key travels as DER SubjectPublicKeyInfo (that exact byte string is what
``report_data`` binds, see :mod:`fedtee.attest.binding`). Signatures are DER ECDSA with
SHA-256 over ``domain || message``: the same key signs receipts and other things, and the
domain tag stops a signature made for one purpose from being replayed as another.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedtee.errors import Reason, VerificationError

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

# DER SPKI of a P-256 key is 91 bytes; anything much larger is not one of ours.
MAX_PUBLIC_KEY_DER = 256
MAX_SIGNATURE_DER = 80  # DER ECDSA P-256 signature is at most 72 bytes


def generate() -> PrivateKey:
    """A fresh P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_der(key: PrivateKey | PublicKey) -> bytes:
    """DER SubjectPublicKeyInfo of ``key`` (or of its public half)."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(der: bytes, *, reason: Reason = Reason.KEY_NOT_BOUND) -> PublicKey:
    """Parse DER SPKI and insist on an uncompressed-or-compressed P-256 point.

    Raises :class:`VerificationError` with ``reason`` for anything else.
    """
    if len(der) > MAX_PUBLIC_KEY_DER:
        raise VerificationError(f"public key of {len(der)} bytes is too large", reason=reason)
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError) as exc:
        raise VerificationError(f"public key is not DER SPKI: {exc}", reason=reason) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("public key is not ECDSA P-256", reason=reason)
    return key


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise VerificationError(
            f"not a PEM private key: {exc}", reason=Reason.KEY_NOT_BOUND
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError("private key is not ECDSA P-256", reason=Reason.KEY_NOT_BOUND)
    return key


def sign(key: PrivateKey, *, domain: bytes, message: bytes) -> bytes:
    """DER ECDSA-SHA256 signature over ``domain || message``."""
    return key.sign(domain + message, ec.ECDSA(hashes.SHA256()))


def verify(public_key: PublicKey, *, domain: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s signature over ``domain || message``."""
    if len(signature) > MAX_SIGNATURE_DER:
        return False
    try:
        public_key.verify(signature, domain + message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = [
    "PrivateKey",
    "PublicKey",
    "generate",
    "load_private_key_pem",
    "load_public_key",
    "private_key_pem",
    "public_key_der",
    "sign",
    "verify",
]
