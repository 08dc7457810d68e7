"""Tests for fedtee.server.artifacts: content-addressed, atomic, bounded model files."""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import fedtee.server.artifacts as artifacts_module
from fedtee.errors import Reason, StorageError, UpdateRejected
from fedtee.server.artifacts import ArtifactStore
from fedtee.tensors import digest, encode


def _data() -> bytes:
    return encode({"w": np.arange(1000, dtype=np.float32).reshape(10, 100)})


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_and_read_back(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    data = _data()
    art = store.put_chunks([data[:100], data[100:]], expected_digest=digest(data))
    assert art.digest == digest(data)
    assert art.path.name == f"{digest(data).hex()}.safetensors"
    assert art.size == len(data)
    assert store.exists(art.digest)
    assert store.read_bytes(art.digest) == data
    arrays = store.load_arrays(art.digest)
    np.testing.assert_array_equal(arrays["w"].ravel(), np.arange(1000, dtype=np.float32))
    assert b"".join(store.iter_chunks(art.digest, chunk_size=333, offset=10)) == data[10:]
    assert _files(tmp_path) == [art.path.name]


def test_same_content_twice_is_idempotent(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    a = store.put(_data())
    b = store.put(_data())
    assert a == b
    assert _files(tmp_path) == [a.path.name]


def test_digest_mismatch_leaves_nothing(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(UpdateRejected) as err:
        store.put(_data(), expected_digest=b"\0" * 32)
    assert err.value.reason is Reason.UPDATE_DIGEST_MISMATCH
    assert _files(tmp_path) == []


def test_size_bound_is_enforced_while_streaming(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path, max_bytes=1000)
    with pytest.raises(UpdateRejected) as err:
        store.put_chunks([b"a" * 600, b"b" * 600])
    assert err.value.reason is Reason.MESSAGE_TOO_LARGE
    assert _files(tmp_path) == []


def test_enospc_raises_storage_error_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ArtifactStore(tmp_path)
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(artifacts_module.os, "write", failing_write)
    with pytest.raises(StorageError, match="no space left") as err:
        store.put_chunks([b"x" * 10, b"y" * 10])
    assert err.value.reason is Reason.STORAGE_FAILED
    assert _files(tmp_path) == []


def test_exception_inside_writer_context_cleans_up(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ConnectionError), store.writer() as w:
        w.write(b"partial")
        raise ConnectionError("client went away")
    assert _files(tmp_path) == []


def test_sweep_removes_crash_leftovers(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    w = store.writer()
    w.write(b"half of a model")  # simulate a crash: never committed nor aborted
    assert len(_files(tmp_path)) == 1
    assert ArtifactStore(tmp_path).sweep() == 1
    assert _files(tmp_path) == []
    w.abort()


def test_corrupted_file_is_detected_on_read(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    art = store.put(_data())
    raw = bytearray(art.path.read_bytes())
    raw[-1] ^= 1
    art.path.write_bytes(bytes(raw))
    with pytest.raises(StorageError) as err:
        store.load_arrays(art.digest)
    assert err.value.reason is Reason.STORAGE_CORRUPT


def test_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as err:
        ArtifactStore(tmp_path).read_bytes(b"\1" * 32)
    assert err.value.reason is Reason.STORAGE_CORRUPT


def test_mapped_read_is_zero_copy_view(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    art = store.put(_data())
    mapped = store.open_mapped(art.digest)
    try:
        assert len(mapped) == art.size
        assert digest(mapped) == art.digest
    finally:
        mapped.close()


def test_chunks_are_verified_while_served_and_a_corrupt_file_never_served_whole(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path)
    data = bytes(range(256)) * 40  # 10,240 bytes
    art = store.put(data)
    for offset in (0, 1, 999, len(data) - 1, len(data)):
        assert (
            b"".join(store.iter_chunks(art.digest, chunk_size=1000, offset=offset))
            == (data[offset:])
        )
    raw = bytearray(data)
    raw[5000] ^= 1  # in the middle: chunks before it look fine
    art.path.write_bytes(bytes(raw))
    for offset in (0, 4000, 9500):
        sent = []
        with pytest.raises(StorageError) as err:
            for chunk in store.iter_chunks(art.digest, chunk_size=1000, offset=offset):
                sent.append(chunk)
        assert err.value.reason is Reason.STORAGE_CORRUPT
        assert len(b"".join(sent)) < len(data) - offset  # the last chunk was held back


def test_unverified_chunks_are_the_file_and_its_identity_tells_a_replaced_one(
    tmp_path: Path,
) -> None:
    store = ArtifactStore(tmp_path)
    data = bytes(range(256)) * 40
    art = store.put(data)
    before = store.identity(art.digest)
    assert b"".join(store.iter_chunks(art.digest, chunk_size=1000, verify=False)) == data
    assert (
        b"".join(store.iter_chunks(art.digest, chunk_size=1000, offset=999, verify=False))
        == (data[999:])
    )
    assert store.identity(art.digest) == before  # reading changes nothing
    spare = art.path.with_name("replacement")
    spare.write_bytes(data[:-10])  # a shorter file put in its place
    os.replace(spare, art.path)
    assert store.identity(art.digest) != before  # so the server hashes it again:
    with pytest.raises(StorageError) as err:
        b"".join(store.iter_chunks(art.digest, chunk_size=1000))
    assert err.value.reason is Reason.STORAGE_CORRUPT
    art.path.unlink()
    with pytest.raises(StorageError):
        store.identity(art.digest)


def _record_writeback(
    monkeypatch: pytest.MonkeyPatch, answer: bool = True
) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []

    def record(fd: int, offset: int, length: int) -> bool:
        calls.append((fd, offset, length))
        return answer

    monkeypatch.setattr(artifacts_module, "start_writeback", record)
    return calls


def test_a_writer_starts_writeback_of_whole_pages_as_it_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_writeback(monkeypatch)
    store = ArtifactStore(tmp_path)
    every = artifacts_module.WRITEBACK_EVERY
    chunk = os.urandom(every // 3 + 5)  # not page-aligned: each hint must stop at a page
    with store.writer() as w:
        for _ in range(10):
            w.write(chunk)
        written = w.size
        artifact = w.commit()
    assert artifact.path.read_bytes() == chunk * 10
    assert len(calls) >= 2
    assert len({fd for fd, _, _ in calls}) == 1
    page = artifacts_module.mmap.PAGESIZE
    expected_offset = 0
    for _, offset, length in calls:
        assert offset == expected_offset  # contiguous from the start
        assert offset % page == 0 and length % page == 0
        assert length >= every - page
        expected_offset += length
    assert expected_offset <= written  # never past what was written
    assert written - expected_offset < every + len(chunk)  # and nothing large left behind


def test_a_small_artifact_starts_no_writeback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_writeback(monkeypatch)
    ArtifactStore(tmp_path).put(b"x" * (artifacts_module.WRITEBACK_EVERY - 1))
    assert calls == []


def test_a_refused_writeback_is_not_asked_again_and_the_artifact_still_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _record_writeback(monkeypatch, answer=False)
    data = os.urandom(3 * artifacts_module.WRITEBACK_EVERY)
    with ArtifactStore(tmp_path).writer() as w:
        for start in range(0, len(data), 1 << 20):
            w.write(data[start : start + (1 << 20)])
        artifact = w.commit()
    assert len(calls) == 1
    assert artifact.path.read_bytes() == data


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_start_writeback_asks_the_kernel_and_fails_closed_on_a_bad_descriptor(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"y" * (1 << 20))
        assert artifacts_module.start_writeback(fd, 0, 1 << 20) is True
    finally:
        os.close(fd)
    assert artifacts_module.start_writeback(fd, 0, 4096) is False  # closed: EBADF
