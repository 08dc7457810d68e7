"""The generated protobuf code is exactly what scripts/gen_proto.sh makes from the .proto."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
GEN = ROOT / "src" / "fedtee" / "wire" / "_gen"


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    out = tmp_path / "gen"
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_proto.sh"), str(out)],
        check=True,
        capture_output=True,
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
    )
    regenerated = _files(out)
    committed = _files(GEN)
    assert sorted(regenerated) == sorted(committed)
    for name, data in regenerated.items():
        assert committed[name] == data, f"{name} differs from its regeneration; rerun the script"


def test_generated_stubs_import_package_relative() -> None:
    grpc_file = (GEN / "fedtee" / "v1" / "federation_pb2_grpc.py").read_text()
    assert "from fedtee.v1 import" not in grpc_file
    from fedtee.wire._gen.fedtee.v1 import federation_pb2, federation_pb2_grpc

    assert federation_pb2.Task.REATTEST == 4
    assert hasattr(federation_pb2_grpc, "FederationServicer")
