"""Helpers shared by every bench/bench_*.py script.

The contract every bench script follows (run from the repository root)::

    .venv/bin/python bench/bench_X.py [--quick] [--json PATH] [--no-doc]

- prints its figures as a readable table;
- ``--quick``: smaller sizes and fewer repeats, finishes in about a minute on 2 cores;
- ``--json PATH``: writes ``{"bench", "command", "date", "machine", "quick", "results"}``
  (see :func:`write_json`);
- unless ``--no-doc``: rewrites its own section of docs/benchmarks.md, between
  ``<!-- bench:X:start -->`` and ``<!-- bench:X:end -->`` (see :func:`write_doc_section`).

This module gives the pieces: :func:`parser` (the standard options), :func:`machine_info`
and :func:`machine_line` (cores, memory, CPU model, load average), :func:`command_line`,
:func:`write_json`, :func:`write_doc_section`, :func:`table` (markdown), and peak RSS of a
whole process tree read from /proc (:func:`tree_pids`, :func:`rss_bytes`,
:func:`hwm_bytes`, :class:`TreeSampler`). Linux only for the /proc parts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
PROC = Path("/proc")

INTRO = """# Benchmarks

Figures measured by the scripts in `bench/`, each run on the machine it names and written
between its own markers. Re-run a script to refresh its section; other sections stay.

"""


# ---------------------------------------------------------------------------- options


def parser(description: str | None) -> argparse.ArgumentParser:
    """The standard bench options: ``--quick``, ``--json PATH``, ``--no-doc``.

    Scripts add their own options to the returned parser.
    """
    first = (description or "").strip().split("\n")[0]
    p = argparse.ArgumentParser(description=first or None)
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats (about a minute on 2 cores)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        default=None,
        help="also write the results as JSON to PATH",
    )
    p.add_argument(
        "--no-doc",
        action="store_true",
        help="do not rewrite this bench's section of docs/benchmarks.md",
    )
    return p


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command that ran this script, as a user would type it from the repository root."""
    args = list(sys.argv if argv is None else argv)
    script = Path(args[0]) if args else Path("bench")
    try:
        shown = script.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = str(script)
    return shlex.join([".venv/bin/python", shown, *args[1:]])


# ---------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        text = (PROC / "cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def _mem_gib() -> float:
    try:
        found = re.search(r"^MemTotal:\s*(\d+) kB", (PROC / "meminfo").read_text(), re.M)
    except OSError:
        return 0.0
    return round(int(found.group(1)) / 1024 / 1024, 1) if found else 0.0


def load_average() -> tuple[float, float, float]:
    """1, 5 and 15 minute load averages (zeros where the OS has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)


def machine_info() -> dict[str, Any]:
    """Cores, memory (GiB), CPU model, architecture, Python and the load average now."""
    return {
        "cores": os.cpu_count() or 0,
        "mem_gib": _mem_gib(),
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in load_average()],
    }


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line for a doc section: CPU, cores, memory, load average at start."""
    m = info or machine_info()
    load = ", ".join(f"{x:.1f}" for x in m["loadavg"])
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['mem_gib']:g} GiB RAM, {m['arch']}, "
        f"Python {m['python']}; load average {load} at start"
    )


def now_iso() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


# ---------------------------------------------------------------------------- output


def result_document(
    bench: str,
    results: Iterable[dict[str, Any]],
    *,
    quick: bool,
    machine: dict[str, Any] | None = None,
    command: str | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """The JSON document of the bench contract; every row must be a flat dict."""
    rows = [dict(r) for r in results]
    for row in rows:
        for key, value in row.items():
            if isinstance(value, dict | list | tuple | set):
                raise ValueError(f"result rows must be flat: {key!r} is {type(value).__name__}")
    return {
        "bench": bench,
        "command": command or command_line(),
        "date": date or now_iso(),
        "machine": machine or machine_info(),
        "quick": quick,
        "results": rows,
    }


def write_json(
    path: Path,
    bench: str,
    results: Iterable[dict[str, Any]],
    *,
    quick: bool,
    machine: dict[str, Any] | None = None,
    command: str | None = None,
    date: str | None = None,
) -> dict[str, Any]:
    """Write the contract's JSON document to ``path`` and return it."""
    doc = result_document(bench, results, quick=quick, machine=machine, command=command, date=date)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return doc


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_doc_section(
    name: str, markdown: str, *, title: str | None = None, doc: Path = DOC
) -> Path:
    """Replace the text between this bench's markers in docs/benchmarks.md.

    ``markdown`` is the body without the markers. Where the markers are absent the section is
    appended at the end under ``## title`` (default: the bench name). Everything outside the
    markers is left byte for byte as it was.
    """
    start, end = markers(name)
    body = f"{start}\n{markdown.strip(chr(10))}\n{end}"
    text = doc.read_text() if doc.exists() else INTRO
    i = text.find(start)
    j = text.find(end, i + len(start)) if i >= 0 else -1
    if i >= 0 and j >= 0:
        text = text[:i] + body + text[j + len(end) :]
    else:
        text = text.rstrip("\n") + f"\n\n## {title or name}\n\n{body}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    tmp = doc.with_name(doc.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(doc)
    return doc


def header(command: str | None = None, info: dict[str, Any] | None = None) -> str:
    """The standard first lines of a doc section: date, exact command, machine."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Run {when} with `{command or command_line()}`.\n\n"
        f"- Machine: {machine_line(info)}. Shared machine: other work running at the same "
        "time makes figures noisier and slower."
    )


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table. ``align``: one letter per column, ``l`` or ``r`` (default ``l``)."""
    spec = [("---:" if (align[i : i + 1] == "r") else "---") for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(spec) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# ---------------------------------------------------------------------------- memory


def _read_proc(pid: int, name: str) -> bytes | None:
    """/proc/PID/NAME in one read (these files are a few KiB), None when the process is
    gone. Raw os calls: the samplers read a few hundred of these a second beside the
    processes they measure, so they must cost little CPU."""
    try:
        fd = os.open(f"{PROC}/{pid}/{name}", os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 1 << 16)
    except OSError:
        return None
    finally:
        os.close(fd)


_STATUS_KIB = re.compile(rb"^(VmRSS|VmHWM):\s*(\d+) kB", re.M)


def _rss_hwm_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of /proc/PID/status in KiB, from one read; zeros when it is gone."""
    text = _read_proc(pid, "status")
    found = dict(_STATUS_KIB.findall(text)) if text else {}
    return int(found.get(b"VmRSS", 0)), int(found.get(b"VmHWM", 0))


def rss_bytes(pid: int) -> int:
    """Resident set size of one process now (VmRSS), 0 if it has exited."""
    return _rss_hwm_kib(pid)[0] * 1024


def hwm_bytes(pid: int) -> int:
    """Peak resident set size of one process so far (VmHWM), 0 if it has exited."""
    return _rss_hwm_kib(pid)[1] * 1024


def _parent_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for name in os.listdir(PROC):
        if not name.isdigit():
            continue
        stat = _read_proc(int(name), "stat")
        if stat is None:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        rest = stat[stat.rfind(b")") + 2 :].split(None, 2)
        if len(rest) >= 2:
            out[int(name)] = int(rest[1])
    return out


def _children_map(parents: dict[int, int]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    return children


def _descend(root: int, parents: dict[int, int], children: dict[int, list[int]]) -> list[int]:
    if root not in parents:
        return []
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and all its live descendants (empty if ``root`` has exited)."""
    parents = _parent_map()
    return _descend(root, parents, _children_map(parents))


def tree_rss_bytes(root: int) -> int:
    """Sum of VmRSS over ``root``'s process tree now."""
    return sum(rss_bytes(p) for p in tree_pids(root))


class TreeSampler:
    """Peak memory of one or more process trees, sampled from /proc in a thread.

    Every ``interval`` seconds it reads /proc once and, for each root, sums VmRSS over the
    live processes of its tree: ``peak_by_root[root]`` is the highest such sum (a lower
    bound of that tree's true peak: a spike between samples can be missed) and
    ``hwm_by_root[root]`` the highest sum of the live processes' VmHWM (an upper bound: each
    process's own peak, even between samples, added up as if simultaneous). ``peak_rss`` /
    ``peak_hwm`` are the same over all roots together. ``add(pid)`` adds a root at any time.
    Use as a context manager, or ``start()``/``stop()``.
    """

    def __init__(self, *roots: int, interval: float = 0.05) -> None:
        self.roots: list[int] = list(roots)
        self.interval = interval
        self.peak_rss = 0
        self.peak_hwm = 0
        self.peak_by_root: dict[int, int] = {}
        self.hwm_by_root: dict[int, int] = {}
        self.pids_seen: set[int] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, pid: int) -> None:
        with self._lock:
            self.roots.append(pid)

    def sample(self) -> int:
        """Take one sample now; returns the summed VmRSS of all the trees."""
        with self._lock:
            roots = list(self.roots)
        parents = _parent_map()
        children = _children_map(parents)
        total_rss = total_hwm = 0
        seen: set[int] = set()
        per_root: dict[int, tuple[int, int]] = {}
        for root in roots:
            pids = [p for p in _descend(root, parents, children) if p not in seen]
            seen.update(pids)
            pairs = [_rss_hwm_kib(p) for p in pids]
            rss = sum(r for r, _ in pairs) * 1024
            hwm = sum(h for _, h in pairs) * 1024
            per_root[root] = (rss, hwm)
            total_rss += rss
            total_hwm += hwm
        with self._lock:
            self.samples += 1
            self.pids_seen |= seen
            self.peak_rss = max(self.peak_rss, total_rss)
            self.peak_hwm = max(self.peak_hwm, total_hwm)
            for root, (rss, hwm) in per_root.items():
                self.peak_by_root[root] = max(self.peak_by_root.get(root, 0), rss)
                self.hwm_by_root[root] = max(self.hwm_by_root.get(root, 0), hwm)
        return total_rss

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> TreeSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    s = sorted(values)
    if not s:
        raise ValueError("median of nothing")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def monotonic() -> float:
    return time.perf_counter()
