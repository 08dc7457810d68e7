"""Proof of possession: every authenticated call shows the credential AND the key it binds.

A credential alone is a bearer token; whoever copied it could use it. So each call also
carries a signature by the client's TEE-bound identity key over::

    POP_DOMAIN || u16be(len(method)) || method || SHA-256(credential) || u64be(timestamp_ms)

``method`` is the full gRPC method name, so a proof made for GetTask cannot be replayed as
SubmitUpdate, and the timestamp must be within a skew window of the server's clock.

gRPC metadata keys: ``fedtee-credential-bin`` (the credential), ``fedtee-pop-bin`` (the DER
signature) and ``fedtee-ts`` (decimal Unix milliseconds). The server checks sizes before
anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from fedtee import identity
from fedtee.errors import CredentialError, Reason

POP_DOMAIN = b"fedtee/v1/pop\x00"
CREDENTIAL_KEY = "fedtee-credential-bin"
POP_KEY = "fedtee-pop-bin"
TIMESTAMP_KEY = "fedtee-ts"
REASON_KEY = "fedtee-reason"  # trailing metadata: the stable reason of a failed call
RETRY_AFTER_KEY = "fedtee-retry-after-ms"  # trailing metadata of a server_busy refusal
# Initial metadata of a SubmitUpdate the server has taken (it holds a transfer slot and is
# about to read the header): a client sends its update's data only after it. Until then gRPC
# lets a client send at most the stream's 64 KiB window, while each data chunk it had begun
# would be let in whole (gRPC core opens the window for the rest of a started message),
# so a queued upload would hold a chunk in the server's memory before it was read.
UPLOAD_GO_KEY = "fedtee-upload"
UPLOAD_GO = "go"


def upload_go(initial_metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
    """Whether a SubmitUpdate's initial metadata is the server's go (a refused upload's
    has none)."""
    for key, value in initial_metadata or ():
        if key == UPLOAD_GO_KEY:
            return (value.decode(errors="replace") if isinstance(value, bytes) else value) == (
                UPLOAD_GO
            )
    return False


MAX_CREDENTIAL_BYTES = 2048
MAX_METHOD_LEN = 128
DEFAULT_SKEW_MS = 120_000

Metadata = tuple[tuple[str, str | bytes], ...]


def pop_message(*, method: str, credential: bytes, timestamp_ms: int) -> bytes:
    raw_method = method.encode("utf-8")
    if not 0 < len(raw_method) <= MAX_METHOD_LEN:
        raise ValueError(f"method name must be 1..{MAX_METHOD_LEN} bytes")
    if not 0 <= timestamp_ms < 1 << 63:
        raise ValueError("timestamp_ms out of range")
    return (
        len(raw_method).to_bytes(2, "big")
        + raw_method
        + hashlib.sha256(credential).digest()
        + timestamp_ms.to_bytes(8, "big")
    )


def client_metadata(
    *, method: str, credential: bytes, private_key: identity.PrivateKey, now_ms: int
) -> Metadata:
    """The metadata a client attaches to one call of ``method``."""
    message = pop_message(method=method, credential=credential, timestamp_ms=now_ms)
    signature = identity.sign(private_key, domain=POP_DOMAIN, message=message)
    return (
        (CREDENTIAL_KEY, credential),
        (POP_KEY, signature),
        (TIMESTAMP_KEY, str(now_ms)),
    )


@dataclass(frozen=True, kw_only=True)
class PresentedAuth:
    """What a caller presented, size-checked but not yet verified."""

    credential: bytes
    pop: bytes
    timestamp_ms: int


def read_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> PresentedAuth:
    """Pick the three values out of invocation metadata (CREDENTIAL_MISSING / _INVALID)."""
    found: dict[str, str | bytes] = {}
    for key, value in metadata or ():
        if key in (CREDENTIAL_KEY, POP_KEY, TIMESTAMP_KEY):
            if key in found:
                raise CredentialError(f"metadata {key} given twice")
            found[key] = value
    credential = found.get(CREDENTIAL_KEY)
    pop = found.get(POP_KEY)
    ts = found.get(TIMESTAMP_KEY)
    if credential is None or pop is None or ts is None:
        raise CredentialError(
            "call needs a credential, a proof of possession and a timestamp; enrol first",
            reason=Reason.CREDENTIAL_MISSING,
        )
    if not isinstance(credential, bytes) or not 0 < len(credential) <= MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"credential must be 1..{MAX_CREDENTIAL_BYTES} bytes")
    if not isinstance(pop, bytes) or not 0 < len(pop) <= identity.MAX_SIGNATURE_DER:
        raise CredentialError("proof of possession is not a signature")
    if isinstance(ts, bytes) or not (0 < len(ts) <= 19 and ts.isascii() and ts.isdigit()):
        raise CredentialError("timestamp must be decimal Unix milliseconds")
    return PresentedAuth(credential=credential, pop=pop, timestamp_ms=int(ts))


def verify_pop(
    presented: PresentedAuth,
    *,
    method: str,
    public_key: identity.PublicKey | bytes,
    now_ms: int,
    skew_ms: int = DEFAULT_SKEW_MS,
) -> None:
    """CREDENTIAL_INVALID unless the proof is the key holder's, for this call, and recent."""
    if abs(now_ms - presented.timestamp_ms) > skew_ms:
        raise CredentialError(
            f"proof of possession is timestamped {presented.timestamp_ms}, server time is "
            f"{now_ms}; more than {skew_ms} ms apart (check the client's clock)"
        )
    if isinstance(public_key, bytes):
        try:
            public_key = identity.load_public_key(public_key)
        except Exception as exc:
            raise CredentialError(f"enrolled key is unusable: {exc}") from exc
    message = pop_message(
        method=method, credential=presented.credential, timestamp_ms=presented.timestamp_ms
    )
    if not identity.verify(public_key, domain=POP_DOMAIN, message=message, signature=presented.pop):
        raise CredentialError(
            "proof of possession does not verify under the key the credential is bound to"
        )


__all__ = [
    "CREDENTIAL_KEY",
    "DEFAULT_SKEW_MS",
    "POP_DOMAIN",
    "POP_KEY",
    "REASON_KEY",
    "RETRY_AFTER_KEY",
    "UPLOAD_GO",
    "UPLOAD_GO_KEY",
    "upload_go",
    "TIMESTAMP_KEY",
    "Metadata",
    "PresentedAuth",
    "client_metadata",
    "pop_message",
    "read_metadata",
    "verify_pop",
]
