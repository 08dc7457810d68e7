"""fedtee.server.rounds.aggregate_stored: the round close on real stored artifacts.

Updates are real files in an ArtifactStore, read back through memory maps and re-hashed with
pread, as the server does. A stored update whose bytes changed on disk after its upload was
checked must never reach the new global model, whichever path the strategy takes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from fedtee import codec, tensors
from fedtee.codec import Encoding
from fedtee.errors import Reason, StorageError
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.rounds import aggregate_stored
from fedtee.server.strategy import BLOCK, FedAvg, Strategy
from fedtee.tensors import Arrays, ModelSpec


class OneAtATime:
    """A third-party strategy: only the Protocol's accumulate (FedAvg underneath)."""

    name = "one-at-a-time"

    def __init__(self) -> None:
        self._inner = FedAvg()
        self.seen = 0

    def configure_round(self, round: int, clients: Sequence[str]) -> list[str]:
        return self._inner.configure_round(round, clients)

    def begin(self, global_spec: ModelSpec) -> None:
        self._inner.begin(global_spec)

    def accumulate(self, update: Mapping[str, NDArray[Any]], num_examples: int) -> None:
        self.seen += 1
        self._inner.accumulate(update, num_examples)

    def finalize(self) -> Arrays:
        return self._inner.finalize()


def _setup(tmp_path: Path, n_updates: int = 5) -> tuple[ArtifactStore, Arrays, list[Arrays]]:
    store = ArtifactStore(tmp_path / "artifacts")
    rng = np.random.default_rng(0)
    size = BLOCK * 2 + 3
    global_arrays = {"w": np.zeros(size, np.float32), "n": np.array([4], np.int64)}
    updates = [
        {"w": rng.standard_normal(size).astype(np.float32), "n": np.array([k], np.int64)}
        for k in range(n_updates)
    ]
    return store, global_arrays, updates


def _close(
    store: ArtifactStore, strategy: Strategy, global_arrays: Arrays, inputs: list[tuple[bytes, int]]
) -> Arrays:
    base = store.map_arrays(store.put(tensors.encode(global_arrays)).digest)
    out = aggregate_stored(
        strategy, artifacts=store, spec=ModelSpec.of(base), global_arrays=base, inputs=inputs
    )
    return store.load_arrays(out.digest)


def _expected(updates: list[Arrays], weights: list[int]) -> NDArray[Any]:
    stacked = np.stack([u["w"].astype(np.float64) for u in updates])
    return np.tensordot(np.array(weights, np.float64), stacked, axes=1) / sum(weights)


@pytest.mark.parametrize("make", [FedAvg, OneAtATime])
def test_round_close_folds_stored_updates_into_a_stored_model(
    tmp_path: Path, make: type[Strategy]
) -> None:
    store, global_arrays, updates = _setup(tmp_path)
    weights = [3, 1, 4, 1, 5]
    inputs = [
        (store.put(tensors.encode(u)).digest, n) for u, n in zip(updates, weights, strict=True)
    ]
    result = _close(store, make(), global_arrays, inputs)
    np.testing.assert_allclose(result["w"], _expected(updates, weights), rtol=1e-6)
    assert result["n"][0] == round(sum(k * n for k, n in enumerate(weights)) / sum(weights))


def test_round_close_folds_compressed_stored_updates(tmp_path: Path) -> None:
    store, global_arrays, updates = _setup(tmp_path, 3)
    inputs = []
    decoded = []
    spec = ModelSpec.of(global_arrays)
    for u, encoding in zip(updates, (Encoding.F16, Encoding.INT8, Encoding.TOPK), strict=True):
        data = codec.encode_update(u, global_arrays=global_arrays, encoding=encoding)
        inputs.append((store.put(data).digest, 2))
        opened = codec.open_update(data, spec=spec, global_arrays=global_arrays)
        decoded.append({k: np.array(opened[k]) for k in spec.tensors})
    result = _close(store, FedAvg(), global_arrays, inputs)
    np.testing.assert_allclose(result["w"], _expected(decoded, [2, 2, 2]), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [FedAvg, OneAtATime])
@pytest.mark.parametrize("value", [1000.0, float("nan")])
def test_a_stored_update_changed_on_disk_never_reaches_the_model(
    tmp_path: Path, make: type[Strategy], value: float
) -> None:
    store, global_arrays, updates = _setup(tmp_path)
    inputs = [(store.put(tensors.encode(u)).digest, 1) for u in updates]
    # The third update's last float changes on disk after its upload was checked: still a
    # well-formed file (finite or not), no longer the bytes its receipt names.
    path = store.path_for(inputs[2][0])
    data = bytearray(path.read_bytes())
    data[-4:] = np.array([value], np.float32).tobytes()  # the F32 tensor "w" is laid out last
    assert tensors.decode(bytes(data))["w"][-1] != updates[2]["w"][-1]
    path.write_bytes(bytes(data))
    before = sorted(p.name for p in store.root.glob("*.safetensors"))
    strategy = make()
    with pytest.raises(StorageError) as err:
        _close(store, strategy, global_arrays, inputs)
    assert err.value.reason is Reason.STORAGE_CORRUPT
    # Nothing was written but the global model _close stored first.
    after = sorted(p.name for p in store.root.glob("*.safetensors"))
    assert len(after) == len(before) + 1
    if isinstance(strategy, OneAtATime):
        assert strategy.seen == 2  # handed only the updates whose digest had matched


_FEW_FILES = """
import resource, sys
from pathlib import Path
import numpy as np
from fedtee import tensors
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.rounds import aggregate_stored, maps_at_once
from fedtee.server.strategy import FedAvg
from fedtee.tensors import ModelSpec

n = 150
store = ArtifactStore(Path(sys.argv[1]))
base = store.map_arrays(store.put(tensors.encode({"w": np.zeros(999, np.float32)})).digest)
inputs = [
    (store.put(tensors.encode({"w": np.full(999, k, np.float32)})).digest, 1) for k in range(n)
]
# Far fewer descriptors than updates: mapping all 150 at once would fail with EMFILE.
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
out = aggregate_stored(
    FedAvg(), artifacts=store, spec=ModelSpec.of(base), global_arrays=base, inputs=inputs
)
print(maps_at_once(), float(store.load_arrays(out.digest)["w"][0]))
"""


def test_a_round_of_more_updates_than_open_files_closes_in_batches(tmp_path: Path) -> None:
    import subprocess
    import sys

    pytest.importorskip("resource")
    done = subprocess.run(
        [sys.executable, "-c", _FEW_FILES, str(tmp_path / "artifacts")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    batch, mean = done.stdout.split()
    assert int(batch) == 16  # an eighth of 64 is 8 (two descriptors an update); at least 16
    assert float(mean) == pytest.approx(sum(range(150)) / 150)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_fold_reads_plain_updates_with_pread_and_closes_their_descriptors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads: int
) -> None:
    """Every element of a plain update's tensors reaches the fold through its block reader
    (pread), none through its mapped array, and every descriptor is closed afterwards."""
    import os

    from fedtee.server import rounds as rounds_module

    store, global_arrays, updates = _setup(tmp_path)
    inputs = [(store.put(tensors.encode(u)).digest, 1) for u in updates]
    read: dict[str, int] = {}
    real = rounds_module._StoredUpdate.block_reader

    def counted(self: Any, name: str) -> Any:
        inner = real(self, name)
        assert inner is not None  # every tensor of a plain update has a reader

        def reader(start: int, out: NDArray[Any]) -> None:
            read[name] = read.get(name, 0) + out.size
            inner(start, out)

        return reader

    monkeypatch.setattr(rounds_module._StoredUpdate, "block_reader", counted)
    released: list[object] = []
    monkeypatch.setattr(rounds_module._StoredUpdate, "release", lambda self: released.append(1))
    opened: list[tuple[int, str]] = []
    real_open = ArtifactStore.open_fd

    def recorded(self: ArtifactStore, digest: bytes) -> int:
        fd = real_open(self, digest)
        opened.append((fd, str(self.path_for(digest))))
        return fd

    monkeypatch.setattr(ArtifactStore, "open_fd", recorded)
    result = _close(store, FedAvg(fold_threads=threads), global_arrays, inputs)
    # One descriptor per update for the fold; writing the new model then opens retired
    # updates again, briefly, to drop their cached pages (ArtifactStore.retire).
    assert {path for _, path in opened[:5]} == {str(store.path_for(d)) for d, _ in inputs}
    for fd, path in opened:  # closed: the number is free, or reused for another file
        with contextlib.suppress(FileNotFoundError):
            assert os.readlink(f"/proc/self/fd/{fd}") != path
    np.testing.assert_allclose(result["w"], _expected(updates, [1] * 5), rtol=1e-6)
    assert result["n"][0] == 2
    assert read == {"w": 5 * updates[0]["w"].size, "n": 5}
    assert released == []  # nothing was mapped for the fold, so nothing to release


def test_a_block_reader_fails_closed_on_a_read_error_and_a_short_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from fedtee.server.rounds import _StoredUpdate

    store, _global, updates = _setup(tmp_path, 1)
    digest = store.put(tensors.encode(updates[0])).digest
    mapped = store.map(digest)
    header = tensors.parse_header(mapped.view)
    arrays = tensors.decode(mapped.view, copy=False)
    offsets = {t.name: header.data_start + t.begin for t in header.tensors}
    update = _StoredUpdate(arrays, mapped, fd=store.open_fd(digest), offsets=offsets, digest=digest)
    reader = update.block_reader("w")
    assert reader is not None
    out = np.empty(BLOCK, np.float32)
    reader(BLOCK, out)
    np.testing.assert_array_equal(out, updates[0]["w"][BLOCK : 2 * BLOCK])

    def failing(*_args: Any) -> int:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr("fedtee.server.rounds.os.preadv", failing)
    with pytest.raises(StorageError) as failed:
        reader(0, out)
    assert failed.value.reason is Reason.STORAGE_FAILED
    assert "Input/output error" in failed.value.message
    monkeypatch.undo()
    os.truncate(store.path_for(digest), offsets["w"] + 10)
    with pytest.raises(StorageError) as err:
        reader(0, out)
    assert err.value.reason is Reason.STORAGE_CORRUPT
    update.close()
    update.close()  # once is enough; twice is harmless
    assert update.block_reader("w") is None


def test_a_map_the_system_refuses_is_a_typed_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import mmap as mmap_module

    store, _global, updates = _setup(tmp_path, 1)
    digest = store.put(tensors.encode(updates[0])).digest

    def refuse(*_args: Any, **_kwargs: Any) -> mmap_module.mmap:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr("fedtee.server.artifacts.mmap.mmap", refuse)
    with pytest.raises(StorageError) as err:
        store.map(digest)
    assert err.value.reason is Reason.STORAGE_FAILED
    assert "Too many open files" in err.value.message
