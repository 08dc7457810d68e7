"""Partial uploads: resumed at the exact offset, bounded in number, bytes and time."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee import tensors
from fedtee.errors import Reason, UpdateRejected
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.uploads import PartialUploads

DATA = bytes(range(256)) * 40


def _parts(store: ArtifactStore) -> int:
    return len(list((store.root / ".tmp").glob("*.part")))


def test_a_parked_upload_resumes_where_it_stopped_and_hashes_the_whole(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    uploads = PartialUploads(store)
    w = uploads.open(client_id="a", key=b"k", size=len(DATA), offset=0, now_ms=0)
    w.write(DATA[:1000])
    assert uploads.park(client_id="a", key=b"k", size=len(DATA), writer=w, now_ms=1)
    assert uploads.status(client_id="a", key=b"k", now_ms=2) == (1000, len(DATA))
    assert uploads.status(client_id="b", key=b"k", now_ms=2) == (0, 0)  # not b's upload

    resumed = uploads.open(client_id="a", key=b"k", size=len(DATA), offset=1000, now_ms=3)
    resumed.write(DATA[1000:])
    artifact = resumed.commit(expected_digest=tensors.digest(DATA))
    assert store.read_bytes(artifact.digest) == DATA
    assert len(uploads) == 0 and _parts(store) == 0


@pytest.mark.parametrize("offset", [999, 1001])
def test_a_wrong_resume_offset_is_refused_and_drops_the_partial(
    tmp_path: Path, offset: int
) -> None:
    store = ArtifactStore(tmp_path)
    uploads = PartialUploads(store)
    w = uploads.open(client_id="a", key=b"k", size=len(DATA), offset=0, now_ms=0)
    w.write(DATA[:1000])
    uploads.park(client_id="a", key=b"k", size=len(DATA), writer=w, now_ms=0)
    with pytest.raises(UpdateRejected) as info:
        uploads.open(client_id="a", key=b"k", size=len(DATA), offset=offset, now_ms=0)
    assert info.value.reason is Reason.UPLOAD_OFFSET_MISMATCH
    assert len(uploads) == 0 and _parts(store) == 0


def test_starting_again_from_zero_drops_what_was_held(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    uploads = PartialUploads(store)
    w = uploads.open(client_id="a", key=b"k", size=len(DATA), offset=0, now_ms=0)
    w.write(DATA[:1000])
    uploads.park(client_id="a", key=b"k", size=len(DATA), writer=w, now_ms=0)
    fresh = uploads.open(client_id="a", key=b"k", size=len(DATA), offset=0, now_ms=0)
    assert fresh.size == 0 and len(uploads) == 0 and _parts(store) == 1  # only the fresh one
    fresh.abort()


def test_resuming_what_was_never_held_is_refused(tmp_path: Path) -> None:
    uploads = PartialUploads(ArtifactStore(tmp_path))
    with pytest.raises(UpdateRejected) as info:
        uploads.open(client_id="a", key=b"k", size=10, offset=5, now_ms=0)
    assert info.value.reason is Reason.UPLOAD_OFFSET_MISMATCH


def test_bounds_drop_the_oldest_and_expire_after_the_ttl(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    uploads = PartialUploads(store, max_uploads=2, max_bytes=2500, ttl_ms=100)
    for i, key in enumerate([b"1", b"2", b"3"]):
        w = uploads.open(client_id="a", key=key, size=len(DATA), offset=0, now_ms=i)
        w.write(DATA[:1000])
        assert uploads.park(client_id="a", key=key, size=len(DATA), writer=w, now_ms=i)
    assert len(uploads) == 2 and _parts(store) == 2
    assert uploads.status(client_id="a", key=b"1", now_ms=3) == (0, 0)  # oldest dropped
    w = uploads.open(client_id="a", key=b"4", size=len(DATA), offset=0, now_ms=3)
    w.write(DATA[:2000])  # 2000 + 1000 held > 2500 bytes: only this one stays
    assert uploads.park(client_id="a", key=b"4", size=len(DATA), writer=w, now_ms=3)
    assert len(uploads) == 1
    assert uploads.status(client_id="a", key=b"4", now_ms=103) == (2000, len(DATA))
    assert uploads.status(client_id="a", key=b"4", now_ms=104) == (0, 0)  # expired
    assert _parts(store) == 0


def test_empty_or_oversized_partials_are_not_kept_and_clear_drops_all(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    uploads = PartialUploads(store, max_bytes=500)
    empty = uploads.open(client_id="a", key=b"e", size=10, offset=0, now_ms=0)
    assert not uploads.park(client_id="a", key=b"e", size=10, writer=empty, now_ms=0)
    big = uploads.open(client_id="a", key=b"b", size=len(DATA), offset=0, now_ms=0)
    big.write(DATA[:600])
    assert not uploads.park(client_id="a", key=b"b", size=len(DATA), writer=big, now_ms=0)
    small = uploads.open(client_id="a", key=b"s", size=len(DATA), offset=0, now_ms=0)
    small.write(DATA[:100])
    assert uploads.park(client_id="a", key=b"s", size=len(DATA), writer=small, now_ms=0)
    uploads.clear()
    assert len(uploads) == 0 and _parts(store) == 0
