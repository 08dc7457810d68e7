"""Short-lived credentials: what an enrolled client shows on every later call.

A credential is a compact token the server signs with its identity key (ECDSA P-256)::

    0x01 || u16be(len(payload)) || payload || DER signature over CRED_DOMAIN || payload

``payload`` is canonical JSON (sorted keys, no spaces) of ``federation_id``, ``client_id``,
``pkh`` (SHA-256 of the DER SPKI identity key), ``tee``, ``hardware_backed``,
``code_identity``, ``issued_ms``, ``expires_ms`` and ``status`` (the attestation status).
It binds the client to one key: it is useless without a proof of possession of that key
(:mod:`fedtee.wire.auth`), and when it expires the client must attest again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from typing import Any

from fedtee import identity
from fedtee.errors import CredentialError, Reason

VERSION = 1
CRED_DOMAIN = b"fedtee/v1/credential\x00"
MAX_PAYLOAD_BYTES = 1024
_LEN = 2
_FIELDS = frozenset(
    {
        "federation_id",
        "client_id",
        "pkh",
        "tee",
        "hardware_backed",
        "code_identity",
        "issued_ms",
        "expires_ms",
        "status",
    }
)


def key_hash(public_key_der: bytes) -> str:
    return hashlib.sha256(public_key_der).hexdigest()


@dataclass(frozen=True, kw_only=True)
class Credential:
    federation_id: str
    client_id: str
    pkh: str  # hex SHA-256 of the identity key's DER SPKI
    tee: str
    hardware_backed: bool
    code_identity: str  # hex
    issued_ms: int
    expires_ms: int
    status: str  # attestation status at enrolment: "affirming" or "warning"

    def payload(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


def _invalid(message: str) -> CredentialError:
    return CredentialError(message, reason=Reason.CREDENTIAL_INVALID)


def _parse(payload: bytes) -> Credential:
    try:
        obj: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _invalid(f"credential payload is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != _FIELDS:
        raise _invalid("credential payload has the wrong fields")
    str_fields = ("federation_id", "client_id", "pkh", "tee", "code_identity", "status")
    if not all(isinstance(obj[k], str) for k in str_fields):
        raise _invalid("credential field has the wrong type")
    if not isinstance(obj["hardware_backed"], bool):
        raise _invalid("credential hardware_backed is not a boolean")
    for k in ("issued_ms", "expires_ms"):
        if not isinstance(obj[k], int) or isinstance(obj[k], bool):
            raise _invalid(f"credential {k} is not an integer")
    cred = Credential(**obj)
    if cred.payload() != payload:
        raise _invalid("credential payload is not canonical")
    return cred


class CredentialAuthority:
    """Issues and checks credentials for one federation with the server's identity key."""

    def __init__(self, *, federation_id: str, key: identity.PrivateKey) -> None:
        self.federation_id = federation_id
        self._key = key
        self._public = key.public_key()

    def issue(
        self,
        *,
        client_id: str,
        public_key: bytes,
        tee: str,
        hardware_backed: bool,
        code_identity: bytes,
        status: str,
        now_ms: int,
        ttl_ms: int,
    ) -> tuple[bytes, Credential]:
        if ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive")
        cred = Credential(
            federation_id=self.federation_id,
            client_id=client_id,
            pkh=key_hash(public_key),
            tee=tee,
            hardware_backed=hardware_backed,
            code_identity=code_identity.hex(),
            issued_ms=now_ms,
            expires_ms=now_ms + ttl_ms,
            status=status,
        )
        payload = cred.payload()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError("credential payload too large (client id too long?)")
        signature = identity.sign(self._key, domain=CRED_DOMAIN, message=payload)
        token = bytes([VERSION]) + len(payload).to_bytes(_LEN, "big") + payload + signature
        return token, cred

    def verify(
        self,
        token: bytes,
        *,
        now_ms: int,
        client_id: str | None = None,
        public_key: bytes | None = None,
    ) -> Credential:
        """Check signature, federation, expiry, then (when given) the client and key.

        CREDENTIAL_INVALID: malformed, forged, another federation's;
        CREDENTIAL_EXPIRED: past ``expires_ms``; CREDENTIAL_WRONG_CLIENT: issued to another
        client id or another key.
        """
        if len(token) < 1 + _LEN or len(token) > 1 + _LEN + MAX_PAYLOAD_BYTES + 80:
            raise _invalid(f"credential of {len(token)} bytes is not a fedtee credential")
        if token[0] != VERSION:
            raise _invalid(f"credential version {token[0]} is not {VERSION}")
        size = int.from_bytes(token[1 : 1 + _LEN], "big")
        if size > MAX_PAYLOAD_BYTES or 1 + _LEN + size > len(token):
            raise _invalid("credential payload length runs past its end")
        payload = token[1 + _LEN : 1 + _LEN + size]
        signature = token[1 + _LEN + size :]
        if not identity.verify(
            self._public, domain=CRED_DOMAIN, message=payload, signature=signature
        ):
            raise _invalid("credential signature does not verify under this server's key")
        cred = _parse(payload)
        if cred.federation_id != self.federation_id:
            raise _invalid(f"credential is for federation {cred.federation_id!r}")
        if now_ms >= cred.expires_ms:
            raise CredentialError(
                f"credential expired at {cred.expires_ms} (now {now_ms}); attest again",
                reason=Reason.CREDENTIAL_EXPIRED,
            )
        if client_id is not None and cred.client_id != client_id:
            raise CredentialError(
                f"credential was issued to {cred.client_id!r}, not {client_id!r}",
                reason=Reason.CREDENTIAL_WRONG_CLIENT,
            )
        if public_key is not None and not hmac.compare_digest(cred.pkh, key_hash(public_key)):
            raise CredentialError(
                "credential is bound to another key than the one enrolled",
                reason=Reason.CREDENTIAL_WRONG_CLIENT,
            )
        return cred


__all__ = ["CRED_DOMAIN", "Credential", "CredentialAuthority", "key_hash"]
