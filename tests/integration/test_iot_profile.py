"""``fedtee client start --profile iot`` in a real process against a real server, one round:
what it imports, and that it completes under a hard memory limit.

The import allow-list: besides the standard library and fedtee itself, the client may load
only the top-level modules that importing numpy, grpcio, protobuf and cryptography loads in
a fresh interpreter here (their own dependencies included: typing_extensions for grpcio, cffi
for cryptography, and grpc_tools, which grpcio itself imports when it is installed). So any
other library (SQLAlchemy, safetensors, rich, cbor2, scikit-learn, torch...) fails the test.

The hard limit is on address space (``prlimit --as``), the limit a process cannot exceed
without failing its allocations; it is not a limit on resident memory: threads reserve
stacks, OpenBLAS reserves a buffer and numpy and gRPC map their libraries, so the client's
address space (about 195 MiB here, with ``MALLOC_ARENA_MAX=1``, ``OPENBLAS_NUM_THREADS=1``
and 2 MiB stacks: :func:`fedtee.eval.iot.client_command`) is several times its peak
resident set (about 69 MiB). The test shows the limit binds: at 176 MiB the same client
fails, at 224 MiB it completes the round.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedtee.eval.iot import run_iot_round

ALLOWED_LIBRARIES = "numpy, numpy.random, grpc, google.protobuf.message, cryptography.x509"
FORBIDDEN = {"sqlalchemy", "safetensors", "rich", "cbor2", "sklearn", "torch", "scipy"}
LIMIT = 224 << 20
TOO_SMALL = 176 << 20


def _baseline() -> set[str]:
    code = (
        f"import json, sys; import {ALLOWED_LIBRARIES}; "
        "import cryptography.hazmat.primitives.asymmetric.ec; "
        "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, text=True)
    return set(json.loads(out.stdout))


@pytest.mark.slow
def test_the_iot_client_loads_only_numpy_grpc_protobuf_and_cryptography(tmp_path: Path) -> None:
    run = run_iot_round(tmp_path, encoding="int8")
    assert run.returncode == 0, run.log
    assert run.accepted
    loaded = set(run.modules)
    assert "fedtee" in loaded and "numpy" in loaded and "grpc" in loaded
    extra = loaded - _baseline() - set(sys.stdlib_module_names) - {"fedtee", "__main__"}
    assert not extra, f"the IoT client loaded {sorted(extra)}"
    assert not loaded & FORBIDDEN
    # The int8 update is about a quarter of the float32 model it was trained from.
    assert run.update_bytes < 0.3 * run.model_bytes
    # The report says where the memory went (bench_iot's tables): after each stage, and
    # per mapping at exit, gRPC's core library among them.
    stages = [name for name, _, _ in run.stages]
    assert stages[0].startswith("started") and stages[-1] == "event finished"
    assert "gRPC channel made" in stages and "event update_accepted" in stages
    assert all(0 < rss <= 2 * run.peak_rss for _, _, rss in run.stages)
    assert any("cygrpc" in name for name in run.resident)
    assert 0 < sum(run.resident.values()) <= 2 * run.peak_rss


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="prlimit and /proc are Linux")
def test_the_iot_client_completes_a_round_under_a_hard_memory_limit(tmp_path: Path) -> None:
    starved = run_iot_round(tmp_path / "starved", encoding="int8", address_space=TOO_SMALL)
    assert starved.returncode != 0 and not starved.accepted  # the limit is real
    run = run_iot_round(tmp_path / "limited", encoding="int8", address_space=LIMIT)
    assert run.returncode == 0, run.log
    assert run.accepted
    assert 0 < run.peak_address_space <= LIMIT
