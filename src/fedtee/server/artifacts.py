"""Model files (safetensors) stored under a directory, named by their SHA-256 digest.

``<root>/<hex digest>.safetensors``. A file appears under its final name only when complete:
bytes stream into ``<root>/.tmp/<random>.part`` while being hashed, the file is fsynced, then
atomically renamed and the directory fsynced. So after a crash (even SIGKILL) a digest either
names a complete, durable file or nothing; leftover partial files sit in ``.tmp`` and are
removed by :meth:`ArtifactStore.sweep`. The state store records an update only after
:meth:`ArtifactWriter.commit` has returned.

Sizes are bounded while writing (a peer cannot fill the disk past the bound); a full disk
(ENOSPC) raises :class:`StorageError` and leaves no partial file.

Reading never needs a model-sized buffer: :meth:`ArtifactStore.map_arrays` gives a file's
tensors as views of a read-only memory map that drops its resident pages before each tensor
is read (:class:`MappedArtifact`, :class:`ReleasingArrays`), so checking or aggregating an
update holds about one tensor of it in memory; re-hashing and serving chunks release as
they go. Artifacts that will not be read again soon (a closed round's updates) are retired
(:meth:`ArtifactStore.retire`): writers drop their page-cache pages just before writing as
many bytes, so new files are written into just-freed memory.
"""

from __future__ import annotations

import ctypes
import errno
import hmac
import mmap
import os
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from fedtee._libc import libc_function
from fedtee.errors import Reason, StorageError, UpdateRejected
from fedtee.tensors import DEFAULT_LIMITS, Arrays, Limits, StreamingDigest, decode

SUFFIX = ".safetensors"
DEFAULT_MAX_BYTES = 4 << 30
_TMP_DIR = ".tmp"


@dataclass(frozen=True, kw_only=True)
class Artifact:
    digest: bytes
    path: Path
    size: int

    @property
    def hex(self) -> str:
        return self.digest.hex()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# An artifact's written bytes are handed to the disk every WRITEBACK_EVERY bytes while it is
# still being written (Linux sync_file_range, SYNC_FILE_RANGE_WRITE: start writeback, do not
# wait), so that the fsync that makes it durable has only the tail left to write. Without it
# nothing reaches the disk before that fsync (the kernel's background writeback starts at 10%
# of memory dirty, or after 30 s): a 40 MB update's fsync took 60-70 ms here, 42-46 ms with
# writeback started every 4-8 MiB while it was written. A hint: durability is still the
# fsync's, and where the call is missing or fails the writer just does not hint.
WRITEBACK_EVERY = 4 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>


_SYNC_FILE_RANGE = libc_function(
    "sync_file_range", (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
)


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Ask the kernel to start writing ``length`` bytes of ``fd`` from ``offset`` to disk,
    without waiting; True when it was asked (False: no sync_file_range here, or it failed)."""
    if _SYNC_FILE_RANGE is None:
        return False
    return bool(_SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE) == 0)


def _storage_error(action: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ENOSPC:
        return StorageError(f"no space left on device while {action}", reason=Reason.STORAGE_FAILED)
    return StorageError(f"{action} failed: {exc}", reason=Reason.STORAGE_FAILED)


_FADV_DONTNEED: int | None = getattr(os, "POSIX_FADV_DONTNEED", None)  # None: macOS
MAX_RETIRED = 1 << 16  # retired artifacts waiting for writers (ArtifactStore.retire)

RELEASE_EVERY = 16 << 20  # bytes read between drops of a map's resident pages
_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)


class MappedArtifact:
    """A read-only memory map of one artifact, and a way to drop its resident pages.

    Pages of a file map count in the process's resident set once read. :meth:`release` tells
    the kernel this process no longer needs them (``MADV_DONTNEED``): they stay in the page
    cache and a later read of the same bytes faults them back in, unchanged (a read-only
    shared file map), so views taken earlier remain valid. Reading a large artifact tensor by
    tensor, releasing between tensors, keeps about one tensor resident instead of the file.
    """

    def __init__(self, mapped: mmap.mmap) -> None:
        self.mmap = mapped
        self.size = len(mapped)

    @property
    def view(self) -> memoryview:
        return memoryview(self.mmap)

    def release(self) -> None:
        if _DONTNEED is not None and not self.mmap.closed:
            self.mmap.madvise(_DONTNEED)

    def digest(self) -> bytes:
        """SHA-256 of the whole map, releasing pages window by window."""
        hashed = StreamingDigest()
        with memoryview(self.mmap) as view:
            for start in range(0, self.size, RELEASE_EVERY):
                hashed.update(view[start : start + RELEASE_EVERY])
                self.release()
        return hashed.digest()


class ReleasingArrays(Mapping[str, NDArray[Any]]):
    """Named views into a :class:`MappedArtifact`; each lookup first releases the map's
    resident pages, so a caller that walks the tensors one at a time (aggregation, update
    checks) holds about one tensor of the file in memory, however large the model."""

    def __init__(self, arrays: Mapping[str, NDArray[Any]], mapped: MappedArtifact) -> None:
        self._arrays = arrays
        self._mapped = mapped

    def __getitem__(self, name: str) -> NDArray[Any]:
        self._mapped.release()
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


class ArtifactWriter:
    """Streams one artifact in; use as a context manager so failures clean up."""

    def __init__(self, store: ArtifactStore, *, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._digest = StreamingDigest()
        self._tmp = store.root / _TMP_DIR / f"{secrets.token_hex(8)}.part"
        self._written_back = 0  # bytes handed to start_writeback so far
        self._writeback = True  # until a call fails
        try:
            self._fd: int | None = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise _storage_error("creating a temporary artifact", exc) from exc

    @property
    def size(self) -> int:
        return self._digest.size

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise RuntimeError("writer is closed")
        if self._digest.size + len(chunk) > self._max_bytes:
            self.abort()
            raise UpdateRejected(
                f"artifact exceeds {self._max_bytes} bytes", reason=Reason.MESSAGE_TOO_LARGE
            )
        self._store.make_room(len(chunk))
        view = memoryview(chunk)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.abort()
            raise _storage_error("writing an artifact", exc) from exc
        self._digest.update(chunk)
        pending = self._digest.size - self._written_back
        if self._writeback and pending >= WRITEBACK_EVERY:
            # Whole pages only: the tail's last page is written again by the next chunk.
            length = pending - pending % mmap.PAGESIZE
            self._writeback = start_writeback(self._fd, self._written_back, length)
            self._written_back += length

    def commit(self, *, expected_digest: bytes | None = None) -> Artifact:
        """Make the file durable under its digest name. Idempotent for identical content."""
        if self._fd is None:
            raise RuntimeError("writer is closed")
        found = self._digest.digest()
        if expected_digest is not None and not hmac.compare_digest(found, expected_digest):
            self.abort()
            raise UpdateRejected(
                f"artifact digest is {found.hex()}, expected {expected_digest.hex()}",
                reason=Reason.UPDATE_DIGEST_MISMATCH,
            )
        final = self._store.path_for(found)
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self._tmp, final)
            _fsync_dir(self._store.root)
        except OSError as exc:
            self.abort()
            raise _storage_error("committing an artifact", exc) from exc
        return Artifact(digest=found, path=final, size=self._digest.size)

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A writer left uncommitted (exception or forgotten commit) must leave nothing behind.
        self.abort()


class ArtifactStore:
    """Content-addressed safetensors files under ``root``."""

    def __init__(self, root: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        # Artifacts retired (see retire), oldest first, with their sizes; the bytes dropped
        # from the page cache and not yet written over by a writer.
        self._retired: deque[tuple[bytes, int]] = deque()
        self._room = 0
        self._recycle = threading.Lock()
        try:
            (self.root / _TMP_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _storage_error(f"creating {self.root}", exc) from exc

    def path_for(self, digest_: bytes) -> Path:
        if len(digest_) != 32:
            raise ValueError("artifact digests are 32 bytes")
        return self.root / f"{digest_.hex()}{SUFFIX}"

    def writer(self, *, max_bytes: int | None = None) -> ArtifactWriter:
        return ArtifactWriter(self, max_bytes=self.max_bytes if max_bytes is None else max_bytes)

    def put_chunks(
        self,
        chunks: Iterable[bytes | memoryview],
        *,
        expected_digest: bytes | None = None,
        max_bytes: int | None = None,
    ) -> Artifact:
        with self.writer(max_bytes=max_bytes) as w:
            for chunk in chunks:
                w.write(chunk)
            return w.commit(expected_digest=expected_digest)

    def put(self, data: bytes, *, expected_digest: bytes | None = None) -> Artifact:
        return self.put_chunks([data], expected_digest=expected_digest)

    def exists(self, digest_: bytes) -> bool:
        return self.path_for(digest_).is_file()

    def get(self, digest_: bytes) -> Artifact:
        path = self.path_for(digest_)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise StorageError(
                f"artifact {digest_.hex()} is missing", reason=Reason.STORAGE_CORRUPT
            ) from exc
        return Artifact(digest=digest_, path=path, size=size)

    def map(self, digest_: bytes, *, verify: bool = True) -> MappedArtifact:
        """A read-only memory map of the artifact whose resident pages can be dropped.

        With ``verify`` the content is re-hashed (window by window, releasing each window's
        pages) so a corrupted file is never read.
        """
        artifact = self.get(digest_)
        if artifact.size == 0:
            raise StorageError(f"artifact {digest_.hex()} is empty", reason=Reason.STORAGE_CORRUPT)
        try:
            with open(artifact.path, "rb") as fh:
                mapped = MappedArtifact(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        except OSError as exc:  # e.g. EMFILE: each map keeps a descriptor
            raise _storage_error(f"mapping artifact {digest_.hex()}", exc) from exc
        if verify and not hmac.compare_digest(mapped.digest(), digest_):
            raise StorageError(
                f"artifact {digest_.hex()} does not match its digest",
                reason=Reason.STORAGE_CORRUPT,
            )
        return mapped

    def open_fd(self, digest_: bytes) -> int:
        """A read-only descriptor of the artifact (for ``pread``); the caller closes it."""
        try:
            return os.open(self.path_for(digest_), os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError as exc:
            raise StorageError(
                f"artifact {digest_.hex()} is missing", reason=Reason.STORAGE_CORRUPT
            ) from exc
        except OSError as exc:  # e.g. EMFILE
            raise _storage_error(f"opening artifact {digest_.hex()}", exc) from exc

    def retire(self, digests: Iterable[bytes]) -> None:
        """Say that these artifacts will not be read again soon. Their page-cache pages are
        not dropped now but by the writers that come next, oldest first, as many bytes as
        each writes (:meth:`make_room`), so that new files go into just-freed pages. On a VM
        that hands free memory back to its host (virtio-balloon free page reporting, about
        2 s after it is freed) writing into memory the host has taken back costs about ten
        times the CPU: 400 MB took 1.0-1.2 s into fresh pages against 0.09 s into just-freed
        ones on the benchmark machines. Past MAX_RETIRED waiting, the oldest are dropped at
        once. Artifacts missing now are skipped."""
        sized: list[tuple[bytes, int]] = []
        for digest_ in digests:
            try:
                sized.append((digest_, self.path_for(digest_).stat().st_size))
            except OSError:
                continue  # nothing on disk: nothing cached to drop
        overflow: list[bytes] = []
        with self._recycle:
            self._retired.extend(sized)
            while len(self._retired) > MAX_RETIRED:
                overflow.append(self._retired.popleft()[0])
        for digest_ in overflow:
            self.drop_cached(digest_)

    def make_room(self, nbytes: int) -> None:
        """Before ``nbytes`` are written: drop the page-cache pages of the oldest retired
        artifacts until as many bytes have been dropped as are about to be written."""
        drop: list[bytes] = []
        with self._recycle:
            while self._room < nbytes and self._retired:
                digest_, size = self._retired.popleft()
                drop.append(digest_)
                self._room += size
            self._room = max(0, self._room - nbytes)
        for digest_ in drop:  # outside the lock: other writers need not wait for this one
            self.drop_cached(digest_)

    def drop_cached(self, digest_: bytes) -> bool:
        """Hand the artifact's page-cache pages back to the kernel (``posix_fadvise``
        DONTNEED): for files this process will not read again soon. A hint that changes
        nothing on disk and raises for no storage problem; True when it was given (False: no
        such call here, or the file is missing or could not be opened). Pages still dirty or
        mapped stay cached."""
        if _FADV_DONTNEED is None:
            return False
        try:
            fd = self.open_fd(digest_)
        except StorageError:
            return False
        try:
            os.posix_fadvise(fd, 0, 0, _FADV_DONTNEED)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def open_mapped(self, digest_: bytes, *, verify: bool = True) -> mmap.mmap:
        """A read-only memory map of the artifact; the caller closes it.

        With ``verify`` the content is re-hashed so a corrupted file is never served.
        """
        return self.map(digest_, verify=verify).mmap

    def read_bytes(self, digest_: bytes) -> bytes:
        mapped = self.open_mapped(digest_)
        try:
            return bytes(mapped)
        finally:
            mapped.close()

    def identity(self, digest_: bytes) -> tuple[int, ...]:
        """What changes when the artifact's file is written, replaced or truncated: device,
        inode, size, and modification and change times (ns). Equal identities mean no write
        through the file system in between (silent corruption on the medium excepted)."""
        try:
            st = os.stat(self.path_for(digest_))
        except FileNotFoundError as exc:
            raise StorageError(
                f"artifact {digest_.hex()} is missing", reason=Reason.STORAGE_CORRUPT
            ) from exc
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def iter_chunks(
        self, digest_: bytes, *, chunk_size: int, offset: int = 0, verify: bool = True
    ) -> Iterable[bytes]:
        """Chunks of the artifact from ``offset`` (for resumable downloads), read with
        ``pread`` rather than a memory map: a map's pages would count in the server's
        resident set once per concurrent download, so N clients downloading a model at once
        would show as N models of memory.

        With ``verify`` the file is hashed as it is sent (the bytes before ``offset`` too,
        unsent) in one pass, and the last chunk is held back until the whole file has
        matched its digest: a corrupted file is never served in full (StorageError instead
        of the last chunk). Without it the bytes are served as they are (a file that shrinks
        while it is read still raises); the caller knows the file matched before and has
        not changed since (:meth:`identity`).
        """
        size = self.get(digest_).size
        if size == 0:
            raise StorageError(f"artifact {digest_.hex()} is empty", reason=Reason.STORAGE_CORRUPT)
        with open(self.path_for(digest_), "rb", buffering=0) as fh:
            fd = fh.fileno()

            def read(start: int, length: int) -> bytes:
                data = os.pread(fd, length, start)
                if len(data) != length:
                    raise StorageError(
                        f"artifact {digest_.hex()} is shorter than its {size} bytes",
                        reason=Reason.STORAGE_CORRUPT,
                    )
                return data

            if not verify:
                for start in range(offset, size, chunk_size):
                    yield read(start, min(chunk_size, size - start))
                return
            hashed = StreamingDigest()
            for start in range(0, min(offset, size), chunk_size):
                hashed.update(read(start, min(chunk_size, offset - start)))
            held: bytes | None = None
            for start in range(offset, size, chunk_size):
                chunk = read(start, min(chunk_size, size - start))
                hashed.update(chunk)
                if held is not None:
                    yield held
                held = chunk
            if not hmac.compare_digest(hashed.digest(), digest_):
                raise StorageError(
                    f"artifact {digest_.hex()} does not match its digest",
                    reason=Reason.STORAGE_CORRUPT,
                )
            if held is not None:
                yield held

    def map_arrays(
        self, digest_: bytes, *, verify: bool = True, limits: Limits = DEFAULT_LIMITS
    ) -> Mapping[str, NDArray[Any]]:
        """The artifact's tensors as read-only views of a memory map, read one at a time:
        reading a tensor first drops the resident pages of those read before (see
        :class:`ReleasingArrays`). Nothing is copied; the map lives as long as the views."""
        mapped = self.map(digest_, verify=verify)
        return ReleasingArrays(decode(mapped.view, limits=limits, copy=False), mapped)

    def load_arrays(self, digest_: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Arrays:
        """The artifact's tensors as writable copies (one model in memory, not two)."""
        return {
            name: np.array(array, copy=True)
            for name, array in self.map_arrays(digest_, limits=limits).items()
        }

    def delete(self, digest_: bytes) -> None:
        self.path_for(digest_).unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove partial files a crash left behind; returns how many."""
        removed = 0
        for part in (self.root / _TMP_DIR).glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed


__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_RETIRED",
    "RELEASE_EVERY",
    "Artifact",
    "ArtifactStore",
    "ArtifactWriter",
    "MappedArtifact",
    "ReleasingArrays",
]
