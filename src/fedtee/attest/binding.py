"""The one definition of how evidence binds a verifier's nonce and the attester's key.

``report_data = H(DOMAIN_TAG || u32be(len(nonce)) || nonce || u32be(len(key)) || key)``

with H chosen by the size of the TEE's user-data field: SHA-512 for 64-byte fields (SGX,
TDX, SEV-SNP, CCA, sim), SHA-384 for 48, SHA-256 for 32 (TPM qualifyingData, PSA). Length
prefixes make the encoding injective, so no (nonce, key) pair can collide with another.
``public_key`` is the DER SubjectPublicKeyInfo of the attester's identity key.

Two directions, two domain tags: :data:`DOMAIN_TAG` for a client's evidence (its identity
key), :data:`SERVER_DOMAIN_TAG` for the aggregator's evidence in mutual attestation (its TLS
key, the client's nonce). Different tags mean evidence made for one direction never checks
in the other, whatever nonce and key it carries.
"""

from __future__ import annotations

import hashlib
import hmac

from fedtee.errors import Reason, VerificationError

DOMAIN_TAG = b"fedtee/v1/report-data"
SERVER_DOMAIN_TAG = b"fedtee/v1/server-report-data"
DOMAINS = frozenset({DOMAIN_TAG, SERVER_DOMAIN_TAG})
MIN_NONCE_BYTES = 16
MAX_NONCE_BYTES = 64
MAX_KEY_BYTES = 4096

_HASH_BY_SIZE = {64: hashlib.sha512, 48: hashlib.sha384, 32: hashlib.sha256}


def report_data(
    *, nonce: bytes, public_key: bytes, size: int = 64, domain: bytes = DOMAIN_TAG
) -> bytes:
    """Derive the user-data value that binds ``nonce`` and ``public_key`` (in ``domain``)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown binding domain {domain!r}")
    if size not in _HASH_BY_SIZE:
        raise ValueError(f"report_data size must be one of 32, 48, 64; got {size}")
    if not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        raise ValueError(
            f"nonce must be {MIN_NONCE_BYTES}..{MAX_NONCE_BYTES} bytes; got {len(nonce)}"
        )
    if not 0 < len(public_key) <= MAX_KEY_BYTES:
        raise ValueError(f"public key must be 1..{MAX_KEY_BYTES} bytes; got {len(public_key)}")
    h = _HASH_BY_SIZE[size]()
    h.update(domain)
    h.update(len(nonce).to_bytes(4, "big"))
    h.update(nonce)
    h.update(len(public_key).to_bytes(4, "big"))
    h.update(public_key)
    return h.digest()


def check_report_data(
    *, found: bytes, nonce: bytes, public_key: bytes, domain: bytes = DOMAIN_TAG
) -> None:
    """Raise ``REPORT_DATA_MISMATCH`` unless ``found`` binds exactly this nonce and key.

    A field longer than the digest (e.g. 64-byte TPM extraData is not possible, but a PSA
    nonce of 64 bytes is) is compared at its own size; nothing is zero-padded silently.
    """
    size = len(found)
    if size not in _HASH_BY_SIZE:
        raise VerificationError(
            f"report_data is {size} bytes; fedtee binds 32, 48 or 64 bytes",
            reason=Reason.REPORT_DATA_MISMATCH,
        )
    expected = report_data(nonce=nonce, public_key=public_key, size=size, domain=domain)
    if not hmac.compare_digest(found, expected):
        raise VerificationError(
            f"report_data {found.hex()[:32]}... does not bind this nonce and public key "
            f"(expected {expected.hex()[:32]}...)",
            reason=Reason.REPORT_DATA_MISMATCH,
        )


__all__ = ["DOMAINS", "DOMAIN_TAG", "SERVER_DOMAIN_TAG", "check_report_data", "report_data"]
