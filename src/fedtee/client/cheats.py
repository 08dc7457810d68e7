"""Cheating clients, for the demo and for tests of the server's defences. Never used by
the honest path: :class:`~fedtee.client.runtime.ClientRuntime` does not import this module.

- :class:`TamperingTransport` changes an update after the runtime signed its receipt (one
  flipped bit in the tensor data): the receipt's ``update_digest`` no longer matches the bytes
  that arrive, and the server must reject it with ``update_digest_mismatch``.
- The other demo cheater needs no hook at all: it runs
  :mod:`fedtee.client.examples.digits_modified`, attests honestly, and is turned away at
  enrolment because its code measurement is not in the policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from fedtee.attest.model import Evidence, TeeType
from fedtee.client.transport import (
    Challenge,
    Enrolment,
    ModelChunk,
    Session,
    SubmitOutcome,
    Task,
    Transport,
    UploadStatus,
)
from fedtee.ledger.receipts import SignedReceipt

CHEATS = ("tamper-update", "modified-code")


def flip_last_bit(chunks: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
    """The same stream with the lowest bit of its final byte flipped (a tensor value, since
    safetensors puts the header first), so the bytes still parse and only the digest differs."""
    pending: bytes | memoryview | None = None
    for chunk in chunks:
        if pending is not None:
            yield pending
        pending = chunk
    if pending:
        yield bytes(pending[:-1]) + bytes([pending[-1] ^ 1])
    elif pending is not None:
        yield pending


class TamperingTransport:
    """A :class:`~fedtee.client.transport.Transport` that alters every update it uploads."""

    def __init__(self, inner: Transport) -> None:
        self.inner = inner
        self.tampered = 0

    def get_challenge(self, *, client_id: str, tee: TeeType, aux: Mapping[str, bytes]) -> Challenge:
        return self.inner.get_challenge(client_id=client_id, tee=tee, aux=aux)

    def enroll(
        self, *, client_id: str, nonce: bytes, public_key: bytes, evidence: Evidence
    ) -> Enrolment:
        return self.inner.enroll(
            client_id=client_id, nonce=nonce, public_key=public_key, evidence=evidence
        )

    def get_task(self, *, session: Session) -> Task:
        return self.inner.get_task(session=session)

    def download_model(
        self, *, session: Session, round: int, digest: bytes, offset: int
    ) -> Iterator[ModelChunk]:
        return self.inner.download_model(session=session, round=round, digest=digest, offset=offset)

    def submit_update(
        self,
        *,
        session: Session,
        receipt: SignedReceipt,
        size: int,
        chunks: Iterable[bytes | memoryview],
        encoding: str = "safetensors",
        offset: int = 0,
    ) -> SubmitOutcome:
        self.tampered += 1
        return self.inner.submit_update(
            session=session,
            receipt=receipt,
            size=size,
            chunks=flip_last_bit(chunks),
            encoding=encoding,
            offset=offset,
        )

    def upload_status(self, *, session: Session, receipt_hash: bytes) -> UploadStatus:
        return self.inner.upload_status(session=session, receipt_hash=receipt_hash)

    def close(self) -> None:
        self.inner.close()


__all__ = ["CHEATS", "TamperingTransport", "flip_last_bit"]
