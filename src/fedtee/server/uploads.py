"""Uploads cut off mid-stream, kept so that the client can resume instead of resending.

An upload is named by the hash of its signed receipt (which the server has verified before
any byte is stored, so only the client holding the TEE-bound key can resume it). When a
``SubmitUpdate`` stream breaks off after the update's header has arrived and been checked,
the round manager parks the partial :class:`~fedtee.server.artifacts.ArtifactWriter` here:
its temporary file and its running SHA-256 stay as they are. The client asks
``GetUploadStatus`` how many bytes arrived and sends only the rest; the digest still covers
the whole update, because the same running hash continues.

Bounded in number, in bytes and in time: at most ``max_uploads`` partial uploads and
``max_bytes`` of them together (the oldest is dropped first), each kept at most ``ttl_ms``
and never past the round it belongs to (the round manager calls :meth:`clear` when a round
closes). A dropped partial upload costs the client a resend from 0, never correctness.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fedtee.errors import Reason, UpdateRejected
from fedtee.server.artifacts import ArtifactStore, ArtifactWriter

DEFAULT_MAX_UPLOADS = 64
DEFAULT_MAX_BYTES = 1 << 30
DEFAULT_TTL_MS = 10 * 60_000


@dataclass(kw_only=True)
class _Held:
    client_id: str
    size: int
    writer: ArtifactWriter
    parked_ms: int


class PartialUploads:
    """Thread-safe table of resumable uploads, keyed by receipt hash."""

    def __init__(
        self,
        artifacts: ArtifactStore,
        *,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_ms: int = DEFAULT_TTL_MS,
    ) -> None:
        if max_uploads < 0 or max_bytes < 0 or ttl_ms < 0:
            raise ValueError("upload bounds must be non-negative")
        self._artifacts = artifacts
        self._max_uploads = max_uploads
        self._max_bytes = max_bytes
        self._ttl_ms = ttl_ms
        self._lock = threading.Lock()
        self._held: dict[bytes, _Held] = {}  # insertion order = age

    def _expire(self, now_ms: int) -> None:
        for key in [k for k, h in self._held.items() if now_ms - h.parked_ms > self._ttl_ms]:
            self._held.pop(key).writer.abort()

    def open(
        self, *, client_id: str, key: bytes, size: int, offset: int, now_ms: int
    ) -> ArtifactWriter:
        """A writer positioned at ``offset``: a fresh one at 0, or the parked one to resume.

        UPLOAD_OFFSET_MISMATCH when ``offset`` > 0 is not exactly what the server holds; at 0
        whatever was held is dropped. The writer is taken out of the table while it streams.
        """
        with self._lock:
            self._expire(now_ms)
            held = self._held.get(key)
            if held is not None and held.client_id != client_id:
                held = None  # not this client's: leave it alone
            if held is not None:
                del self._held[key]
                if offset > 0 and held.size == size and held.writer.size == offset:
                    return held.writer
                held.writer.abort()
                if offset == 0:  # the client starts again (it may not have asked first)
                    return self._artifacts.writer(max_bytes=size)
                raise UpdateRejected(
                    f"resume at {offset} of {size} bytes, but the server held "
                    f"{held.writer.size} of {held.size} (now dropped: start again from 0)",
                    reason=Reason.UPLOAD_OFFSET_MISMATCH,
                )
        if offset != 0:
            raise UpdateRejected(
                f"resume at offset {offset}, but the server holds nothing of this upload",
                reason=Reason.UPLOAD_OFFSET_MISMATCH,
            )
        return self._artifacts.writer(max_bytes=size)

    def park(
        self, *, client_id: str, key: bytes, size: int, writer: ArtifactWriter, now_ms: int
    ) -> bool:
        """Keep an interrupted upload for resumption; False (and aborted) if it cannot be."""
        if writer.size == 0 or writer.size > self._max_bytes or self._max_uploads == 0:
            writer.abort()
            return False
        with self._lock:
            self._expire(now_ms)
            previous = self._held.pop(key, None)
            if previous is not None:
                previous.writer.abort()
            while self._held and (
                len(self._held) >= self._max_uploads
                or self._bytes() + writer.size > self._max_bytes
            ):
                oldest = next(iter(self._held))
                self._held.pop(oldest).writer.abort()
            self._held[key] = _Held(client_id=client_id, size=size, writer=writer, parked_ms=now_ms)
        return True

    def _bytes(self) -> int:
        return sum(h.writer.size for h in self._held.values())

    def status(self, *, client_id: str, key: bytes, now_ms: int) -> tuple[int, int]:
        """(bytes held, declared size) of this client's upload ``key``; (0, 0) if none."""
        with self._lock:
            self._expire(now_ms)
            held = self._held.get(key)
            if held is None or held.client_id != client_id:
                return 0, 0
            return held.writer.size, held.size

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def clear(self) -> None:
        """Drop every partial upload (their round closed, or the server stops)."""
        with self._lock:
            held, self._held = self._held, {}
        for h in held.values():
            h.writer.abort()


__all__ = ["PartialUploads"]
