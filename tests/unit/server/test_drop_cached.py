"""ArtifactStore.drop_cached, retire and make_room, and the round close's use of them: once a
round has closed, its updates are retired, and the writers that come next drop their
page-cache pages, oldest first, as many bytes as they write (so they write into just-freed
pages).

Residency is read with mincore(2) on a private map of the file (mapping faults nothing in),
so these tests look at the kernel's page cache itself, not at a flag of ours.
"""

from __future__ import annotations

import ctypes
import mmap
import os
from pathlib import Path

import numpy as np
import pytest

from fedtee import tensors
from fedtee.server import artifacts
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.rounds import aggregate_stored
from fedtee.server.strategy import FedAvg
from fedtee.tensors import ModelSpec

_LIBC = ctypes.CDLL(None, use_errno=True)
_MINCORE = getattr(_LIBC, "mincore", None)
pytestmark = pytest.mark.skipif(
    _MINCORE is None or not hasattr(os, "POSIX_FADV_DONTNEED"),
    reason="needs mincore(2) and posix_fadvise (Linux)",
)


def _fs_type(path: Path) -> str:
    """The file system type of the mount holding ``path`` (/proc/mounts, longest match)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, fstype, *_ = line.split()
        if path.is_relative_to(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


def _resident_pages(path: Path) -> int:
    size = path.stat().st_size
    with path.open("rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as mm:
        pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
        vec = (ctypes.c_ubyte * pages)()
        addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
        assert _MINCORE is not None
        if _MINCORE(ctypes.c_void_p(addr), ctypes.c_size_t(size), vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return sum(v & 1 for v in vec)


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    if _fs_type(tmp_path) in {"tmpfs", "ramfs"}:
        pytest.skip("pages of a memory file system are the file: they cannot be dropped")
    return ArtifactStore(tmp_path / "artifacts")


def _cached(store: ArtifactStore, digest: bytes) -> int:
    store.read_bytes(digest)  # reads the whole file, so every page is in the page cache
    return _resident_pages(store.path_for(digest))


def test_drop_cached_hands_an_artifacts_pages_back_and_keeps_its_bytes(
    store: ArtifactStore,
) -> None:
    data = tensors.encode({"w": np.arange(2 << 20, dtype=np.float32)})  # 8 MiB
    art = store.put(data)
    pages = (art.size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    assert _cached(store, art.digest) == pages
    assert store.drop_cached(art.digest) is True
    assert _resident_pages(art.path) == 0
    assert store.read_bytes(art.digest) == data  # a hint: the file itself is unchanged


def test_drop_cached_of_a_missing_artifact_says_so_and_raises_nothing(
    store: ArtifactStore,
) -> None:
    assert store.drop_cached(b"\x01" * 32) is False


def _stored(store: ArtifactStore, value: float, size: int = 1 << 20) -> bytes:
    return store.put(tensors.encode({"w": np.full(size, value, np.float32)})).digest


def test_retired_artifacts_leave_the_page_cache_oldest_first_as_bytes_are_written(
    store: ArtifactStore,
) -> None:
    old = [_stored(store, k) for k in (1, 2, 3)]  # 4 MiB each
    for digest in old:
        assert _cached(store, digest) > 0
    store.retire(old)
    assert all(_resident_pages(store.path_for(d)) > 0 for d in old)  # nothing dropped yet
    _stored(store, 9, size=1 << 18)  # 1 MiB written: the oldest retired file makes room
    assert [_resident_pages(store.path_for(d)) > 0 for d in old] == [False, True, True]
    _stored(store, 10)  # 4 MiB more: the second covers the rest, the third stays cached
    assert [_resident_pages(store.path_for(d)) > 0 for d in old] == [False, False, True]


def test_past_max_retired_the_oldest_are_dropped_at_once(
    store: ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(artifacts, "MAX_RETIRED", 2)
    old = [_stored(store, k, size=1 << 16) for k in (1, 2, 3)]
    for digest in old:
        _cached(store, digest)
    store.retire([*old, b"\x02" * 32])  # a missing artifact is skipped, not counted
    assert [_resident_pages(store.path_for(d)) > 0 for d in old] == [False, True, True]


def test_a_round_close_retires_its_updates_for_the_next_writes(
    store: ArtifactStore,
) -> None:
    size = 1 << 20
    base = store.map_arrays(store.put(tensors.encode({"w": np.zeros(size, np.float32)})).digest)
    updates = [_stored(store, k) for k in (1, 3)]
    for digest in updates:
        assert _cached(store, digest) > 0
    out = aggregate_stored(
        FedAvg(),
        artifacts=store,
        spec=ModelSpec.of(base),
        global_arrays=base,
        inputs=[(d, 1) for d in updates],
    )
    # Writing the new model (4 MiB) made room: it dropped the first update's pages.
    assert _resident_pages(out.path) > 0  # the next round serves it: it stays cached
    assert [_resident_pages(store.path_for(d)) > 0 for d in updates] == [False, True]
    _stored(store, 7)  # the next round's first upload: the second update's pages go
    assert [_resident_pages(store.path_for(d)) for d in updates] == [0, 0]
    np.testing.assert_array_equal(store.load_arrays(out.digest)["w"], np.full(size, 2.0))
