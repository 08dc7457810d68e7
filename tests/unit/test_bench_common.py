"""bench/_common.py (shared by every bench script) and one real quick bench run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import _common  # noqa: E402


def test_section_writer_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    before = (
        "# Benchmarks\n\nintro\n\n<!-- bench:other:start -->\nkeep me\n<!-- bench:other:end -->\n"
    )
    doc.write_text(before)
    _common.write_doc_section("x", "first", title="X bench", doc=doc)
    text = doc.read_text()
    assert text.startswith(before.rstrip("\n"))
    assert "## X bench\n\n<!-- bench:x:start -->\nfirst\n<!-- bench:x:end -->\n" in text
    doc.write_text(text + "\ntrailer\n")
    _common.write_doc_section("x", "second\n", doc=doc)
    text = doc.read_text()
    assert "first" not in text
    assert "<!-- bench:x:start -->\nsecond\n<!-- bench:x:end -->" in text
    assert text.count("## X bench") == 1
    assert "keep me" in text and text.endswith("\ntrailer\n")
    _common.write_doc_section("other", "replaced", doc=doc)
    assert "keep me" not in doc.read_text()
    assert "second" in doc.read_text()


def test_json_document_follows_the_contract(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    _common.write_json(out, "x", [{"a": 1, "b": "two"}], quick=True, command="cmd")
    doc = json.loads(out.read_text())
    assert doc["bench"] == "x" and doc["quick"] is True and doc["command"] == "cmd"
    assert doc["results"] == [{"a": 1, "b": "two"}]
    assert {"cores", "mem_gib", "cpu"} <= set(doc["machine"])
    assert doc["machine"]["cores"] >= 1 and doc["machine"]["mem_gib"] > 0
    with pytest.raises(ValueError, match="flat"):
        _common.result_document("x", [{"nested": {"a": 1}}], quick=False)


def test_parser_has_the_standard_options() -> None:
    args = _common.parser("doc").parse_args(["--quick", "--json", "o.json", "--no-doc"])
    assert args.quick and args.no_doc and args.json == Path("o.json")
    assert _common.command_line(["bench/bench_x.py", "--quick"]).endswith(
        "bench/bench_x.py --quick"
    )


@pytest.fixture
def parent_with_child() -> Iterator[subprocess.Popen[str]]:
    """A process whose child holds 64 MiB resident; both end with the test."""
    child = "b = bytearray(64 << 20); print('ready', flush=True); import time; time.sleep(60)"
    parent = textwrap.dedent(
        f"""
        import subprocess, sys
        p = subprocess.Popen([sys.executable, "-c", {child!r}], stdout=subprocess.PIPE, text=True)
        print(p.stdout.readline().strip(), p.pid, flush=True)
        p.wait()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        for pid in _common.tree_pids(proc.pid)[::-1]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        proc.wait(timeout=10)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_rss_of_a_process_tree_includes_children(
    parent_with_child: subprocess.Popen[str],
) -> None:
    assert parent_with_child.stdout is not None
    ready, child_pid = parent_with_child.stdout.readline().split()
    assert ready == "ready"
    pids = _common.tree_pids(parent_with_child.pid)
    assert set(pids) == {parent_with_child.pid, int(child_pid)}
    assert _common.rss_bytes(int(child_pid)) >= 64 << 20
    assert _common.hwm_bytes(int(child_pid)) >= _common.rss_bytes(int(child_pid))
    sampler = _common.TreeSampler(parent_with_child.pid, os.getpid())
    total = sampler.sample()
    tree = sampler.peak_by_root[parent_with_child.pid]
    assert tree >= (64 << 20) + _common.rss_bytes(parent_with_child.pid)
    assert tree < 1 << 30
    assert total == tree + sampler.peak_by_root[os.getpid()]
    assert sampler.peak_hwm >= sampler.peak_rss == total
    assert _common.tree_pids(2**22 + 12345) == []  # beyond pid_max: no such process
    assert _common.rss_bytes(2**22 + 12345) == 0


@pytest.mark.slow
def test_bench_aggregate_quick_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "agg.json"
    done = subprocess.run(
        [sys.executable, "bench/bench_aggregate.py", "--quick", "--no-doc", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["bench"] == "aggregate" and doc["quick"] is True
    assert "bench/bench_aggregate.py --quick --no-doc --json" in doc["command"]
    rows = doc["results"]
    assert {r["accumulator"] for r in rows} == {"float64", "float32"}
    for r in rows:
        assert r["aggregate_gb_s"] > 0 and r["copy_gb_s"] > 0
        assert r["ratio"] == pytest.approx(r["aggregate_gb_s"] / r["copy_gb_s"], rel=0.02)
        assert isinstance(r["goal_met"], bool)
    assert "| accumulator |" in done.stdout
