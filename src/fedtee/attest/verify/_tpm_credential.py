"""TPM2_MakeCredential in pure Python (TPM 2.0 Library Part 1, 24 "Credential Protection").

The verifier encrypts a secret so that only the TPM holding the EK's private key can recover
it, and only for a key with the given Name (TPM2_ActivateCredential checks both). The steps:

1. seed: RSA EK: random, encrypted with RSA-OAEP(nameAlg, label "IDENTITY\\0");
   ECC EK: ECDH between an ephemeral key and the EK, seed = KDFe(nameAlg, Z, "IDENTITY",
   ephemeral.x, ek.x) and the ephemeral point is sent (Part 1, 11.4.10.3 / C.6.4).
2. symKey = KDFa(nameAlg, seed, "STORAGE", name, "", symmetric key bits);
   encIdentity = AES-CFB(symKey, IV = 0)(TPM2B_DIGEST(credential)).
3. hmacKey = KDFa(nameAlg, seed, "INTEGRITY", "", "", digest bits);
   outerHMAC = HMAC(nameAlg, hmacKey, encIdentity || name).
4. credentialBlob = TPM2B_ID_OBJECT(TPM2B_DIGEST(outerHMAC) || encIdentity),
   secret = TPM2B_ENCRYPTED_SECRET(encrypted seed or ephemeral TPMS_ECC_POINT).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

try:  # AES-CFB is what TPM 2.0 mandates; newer cryptography files it under "decrepit".
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # pragma: no cover - cryptography < 47
    from cryptography.hazmat.primitives.ciphers.modes import CFB

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVE_SIZES: dict[str, int] = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66}


def _u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def _tpm2b(data: bytes) -> bytes:
    return _u16(len(data)) + data


def _label(label: bytes) -> bytes:
    # Labels are used with their terminating zero octet (Part 1, 11.4.9.2).
    return label if label.endswith(b"\x00") else label + b"\x00"


def kdfa(
    hash_name: str, key: bytes, label: bytes, context_u: bytes, context_v: bytes, bits: int
) -> bytes:
    """SP 800-108 counter-mode KDF with HMAC, as TPM 2.0 Part 1, 11.4.10.2 defines it."""
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        out += hmac.new(
            key,
            counter.to_bytes(4, "big")
            + _label(label)
            + context_u
            + context_v
            + bits.to_bytes(4, "big"),
            hash_name,
        ).digest()
    return out[: (bits + 7) // 8]


def kdfe(
    hash_name: str, z: bytes, label: bytes, party_u: bytes, party_v: bytes, bits: int
) -> bytes:
    """SP 800-56A concatenation KDF, as TPM 2.0 Part 1, 11.4.10.3 defines it."""
    out = b""
    counter = 0
    while len(out) * 8 < bits:
        counter += 1
        h = hashlib.new(hash_name)
        h.update(counter.to_bytes(4, "big") + z + _label(label) + party_u + party_v)
        out += h.digest()
    return out[: (bits + 7) // 8]


@dataclass(frozen=True, kw_only=True)
class EkParams:
    """What MakeCredential needs of the EK: its key, nameAlg and symmetric key size."""

    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    name_alg: str
    sym_bits: int


@dataclass(frozen=True, kw_only=True)
class Credential:
    credential_blob: bytes  # TPM2B_ID_OBJECT
    encrypted_secret: bytes  # TPM2B_ENCRYPTED_SECRET


def _seed(ek: EkParams) -> tuple[bytes, bytes]:
    """Return (seed, encrypted seed bytes without the TPM2B size)."""
    digest_size = hashlib.new(ek.name_alg).digest_size
    key = ek.public_key
    if isinstance(key, rsa.RSAPublicKey):
        seed = os.urandom(digest_size)
        algo = _HASHES[ek.name_alg]()
        encrypted = key.encrypt(
            seed,
            padding.OAEP(mgf=padding.MGF1(algorithm=algo), algorithm=algo, label=b"IDENTITY\x00"),
        )
        return seed, encrypted
    size = _CURVE_SIZES[key.curve.name]
    ephemeral = ec.generate_private_key(key.curve)
    z = ephemeral.exchange(ec.ECDH(), key)
    eph = ephemeral.public_key().public_numbers()
    ek_numbers = key.public_numbers()
    eph_x, eph_y = eph.x.to_bytes(size, "big"), eph.y.to_bytes(size, "big")
    seed = kdfe(
        ek.name_alg, z, b"IDENTITY", eph_x, ek_numbers.x.to_bytes(size, "big"), digest_size * 8
    )
    return seed, _tpm2b(eph_x) + _tpm2b(eph_y)


def make_credential(*, ek: EkParams, name: bytes, credential: bytes) -> Credential:
    """Protect ``credential`` for the TPM that holds ``ek`` and the object named ``name``."""
    digest_size = hashlib.new(ek.name_alg).digest_size
    if not 0 < len(credential) <= digest_size:
        raise ValueError(f"credential must be 1..{digest_size} bytes")
    seed, encrypted_seed = _seed(ek)
    sym_key = kdfa(ek.name_alg, seed, b"STORAGE", name, b"", ek.sym_bits)
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    enc_identity = encryptor.update(_tpm2b(credential)) + encryptor.finalize()
    hmac_key = kdfa(ek.name_alg, seed, b"INTEGRITY", b"", b"", digest_size * 8)
    outer = hmac.new(hmac_key, enc_identity + name, ek.name_alg).digest()
    id_object = _tpm2b(outer) + enc_identity
    return Credential(credential_blob=_tpm2b(id_object), encrypted_secret=_tpm2b(encrypted_seed))


__all__ = ["Credential", "EkParams", "kdfa", "kdfe", "make_credential"]
