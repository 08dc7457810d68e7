"""Fake PSA and CCA token signers, for negative tests and demos.

:class:`FakePsaDevice` signs PSA 2.0.0 tokens with a generated IAK whose instance id is
derived as TF-M does (``0x01 || SHA-256(uncompressed point)``). :class:`FakeCcaPlatform`
signs CCA tokens: a platform token with a generated CPAK and a realm token with a generated
RAK whose hash is the platform challenge (unless a test asks otherwise). Encoding uses
``cbor2``; nothing here is trusted by default.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fedtee.attest.evidence import cca as cca_format
from fedtee.attest.verify._cose import raw_point

_ALG_FOR_CURVE: dict[str, tuple[int, hashes.HashAlgorithm, int]] = {
    "secp256r1": (-7, hashes.SHA256(), 32),
    "secp384r1": (-35, hashes.SHA384(), 48),
    "secp521r1": (-36, hashes.SHA512(), 66),
}


def sign1(
    claims: Mapping[Any, Any], key: ec.EllipticCurvePrivateKey, *, tagged: bool = True
) -> bytes:
    """A COSE_Sign1 over ``claims`` (CBOR-encoded) by ``key``, alg chosen by its curve."""
    alg, digest, size = _ALG_FOR_CURVE[key.curve.name]
    protected = cbor2.dumps({1: alg})
    payload = cbor2.dumps(dict(claims))
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    r, s = decode_dss_signature(key.sign(to_sign, ec.ECDSA(digest)))
    body = [protected, {}, payload, r.to_bytes(size, "big") + s.to_bytes(size, "big")]
    return cbor2.dumps(cbor2.CBORTag(18, body) if tagged else body)


def _component(kind: str, measurement: bytes) -> dict[int, Any]:
    return {1: kind, 2: measurement, 4: "1.0.0", 5: bytes(32), 6: "sha-256"}


DEFAULT_COMPONENTS: tuple[tuple[str, bytes], ...] = (
    ("BL", hashlib.sha256(b"fake bootloader").digest()),
    ("SPE", hashlib.sha256(b"fake secure partition").digest()),
)


@dataclass(frozen=True, kw_only=True)
class FakePsaDevice:
    iak: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls, curve: ec.EllipticCurve | None = None) -> FakePsaDevice:
        return cls(iak=ec.generate_private_key(curve or ec.SECP256R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.iak.public_key()

    @property
    def instance_id(self) -> bytes:
        return b"\x01" + hashlib.sha256(raw_point(self.public_key)).digest()

    def claims(
        self,
        *,
        nonce: bytes,
        lifecycle: int = 0x3000,
        components: Sequence[tuple[str, bytes]] = DEFAULT_COMPONENTS,
    ) -> dict[int, Any]:
        return {
            265: "http://arm.com/psa/2.0.0",
            10: nonce,
            256: self.instance_id,
            2396: bytes(range(32)),
            2397: bytes(32),
            2394: 1,
            2395: lifecycle,
            2399: [_component(k, m) for k, m in components],
            2400: "fedtee.test",
        }

    def token(self, *, nonce: bytes, **kwargs: Any) -> bytes:
        return sign1(self.claims(nonce=nonce, **kwargs), self.iak)


@dataclass(frozen=True, kw_only=True)
class FakeCcaPlatform:
    cpak: ec.EllipticCurvePrivateKey = field(repr=False)

    @classmethod
    def generate(cls) -> FakeCcaPlatform:
        return cls(cpak=ec.generate_private_key(ec.SECP384R1()))

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self.cpak.public_key()

    def token(
        self,
        *,
        challenge: bytes,
        rak: ec.EllipticCurvePrivateKey | None = None,
        bound_key: ec.EllipticCurvePublicKey | None = None,
        rim: bytes = bytes(range(64)),
        rems: Sequence[bytes] = (bytes(64),) * 4,
        lifecycle: int = 0x3000,
        cose_key: bool = False,
    ) -> bytes:
        """A CCA token; ``bound_key`` (default: the RAK) is what the platform challenge hashes.

        ``cose_key`` carries the RAK as a CBOR COSE_Key (later RMM profiles) instead of a raw
        point; the challenge then hashes those COSE_Key bytes, as the RMM does.
        """
        realm_key = rak or ec.generate_private_key(ec.SECP384R1())
        point = raw_point(realm_key.public_key())
        rak_bytes = (
            cbor2.dumps({1: 2, -1: 2, -2: point[1:49], -3: point[49:]}) if cose_key else point
        )
        bound = raw_point(bound_key) if bound_key is not None else rak_bytes
        realm = {
            10: challenge,
            44235: bytes(64),
            44236: "sha-512",
            44237: rak_bytes,
            44238: rim,
            44239: list(rems),
            44240: "sha-256",
        }
        platform = {
            265: "http://arm.com/CCA-SSD/1.0.0",
            10: hashlib.sha256(bound).digest(),
            2396: bytes(range(32)),
            256: b"\x01" + bytes(range(32)),
            2401: b"\xcf" * 4,
            2395: lifecycle,
            2402: "sha-256",
            2399: [_component(k, m) for k, m in DEFAULT_COMPONENTS],
        }
        return cbor2.dumps(
            cbor2.CBORTag(
                cca_format.CCA_TOKEN_TAG,
                {
                    cca_format.PLATFORM_TOKEN: sign1(platform, self.cpak),
                    cca_format.REALM_TOKEN: sign1(realm, realm_key),
                },
            )
        )


__all__ = ["DEFAULT_COMPONENTS", "FakeCcaPlatform", "FakePsaDevice", "sign1"]
