"""Artifacts read through memory maps whose resident pages are released tensor by tensor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedtee import tensors
from fedtee.errors import StorageError
from fedtee.server.artifacts import ArtifactStore

MiB = 1 << 20


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status")


def _stored(
    tmp_path: Path, *, tensors_: int = 16, each: int = 4 * MiB
) -> tuple[ArtifactStore, bytes, dict]:
    store = ArtifactStore(tmp_path / "artifacts")
    arrays = {f"t{i:02d}": np.full(each // 4, i, dtype=np.float32) for i in range(tensors_)}
    digest = store.put_chunks(tensors.encode_stream(arrays).chunks(MiB)).digest
    return store, digest, arrays


def test_map_arrays_reads_every_tensor_while_holding_about_one(tmp_path: Path) -> None:
    store, digest, arrays = _stored(tmp_path)  # 64 MiB in 16 tensors of 4 MiB
    base = _rss_file_kib()
    mapped = store.map_arrays(digest, verify=False)
    peak = base
    for name, array in mapped.items():
        assert float(array.sum()) == float(arrays[name].sum())  # every page read
        peak = max(peak, _rss_file_kib())
    # Without releasing, the walk would leave all 64 MiB resident.
    assert (peak - base) * 1024 < 16 * MiB, (base, peak)
    assert not next(iter(mapped.values())).flags.writeable


def test_views_stay_valid_after_their_pages_are_released(tmp_path: Path) -> None:
    store, digest, arrays = _stored(tmp_path, tensors_=3, each=MiB)
    mapped = store.map_arrays(digest)
    first = mapped["t00"]
    _ = mapped["t01"], mapped["t02"]  # each lookup releases the map's pages
    assert np.array_equal(first, arrays["t00"])


def test_load_arrays_gives_writable_copies_and_chunks_cover_the_file(tmp_path: Path) -> None:
    store, digest, arrays = _stored(tmp_path, tensors_=2, each=MiB)
    loaded = store.load_arrays(digest)
    loaded["t01"][0] = 9
    assert np.array_equal(store.load_arrays(digest)["t01"], arrays["t01"])
    assert tensors.digest(b"".join(store.iter_chunks(digest, chunk_size=MiB // 3))) == digest


def test_a_corrupted_artifact_is_not_mapped(tmp_path: Path) -> None:
    store, digest, _ = _stored(tmp_path, tensors_=2, each=MiB)
    path = store.path_for(digest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError) as info:
        store.map_arrays(digest)
    assert info.value.reason.value == "storage_corrupt"


def test_concurrent_downloads_do_not_map_the_model(tmp_path: Path) -> None:
    # Served with pread, not a map: 8 downloads in flight add no file pages to the RSS
    # (a map would add up to the whole model per download).
    store, digest, _ = _stored(tmp_path, tensors_=4, each=2 * MiB)
    base = _rss_file_kib()
    streams = [iter(store.iter_chunks(digest, chunk_size=MiB)) for _ in range(8)]
    for _ in range(6):
        for stream in streams:
            assert len(next(stream)) == MiB
    assert (_rss_file_kib() - base) * 1024 < 2 * MiB
    for stream in streams:
        rest = b"".join(stream)
        assert len(rest) > 0
