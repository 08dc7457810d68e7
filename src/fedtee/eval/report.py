"""``fedtee eval report``: run the measurements on this machine and write docs/evaluation.md.

The report joins three kinds of content, each traceable:

- properties of each TEE type and figures from the literature (:mod:`fedtee.eval.tees`),
  every one with a citation;
- measurements taken here by the benchmark scripts in ``bench/`` (run as subprocesses with
  ``--json``; the report names the exact command and keeps the JSON beside the report);
- the attack table from ``fedtee eval attacks --json``.

The recommendation per use case is computed from those tables by :func:`recommend`, with
its criteria and weights printed, never written by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fedtee import __version__
from fedtee.errors import ConfigError
from fedtee.eval.tees import CITATIONS, PROFILES, TeeProfile

# ---------------------------------------------------------------------------- what runs


@dataclass(frozen=True)
class BenchSpec:
    """One bench script as the report runs it: each entry of ``full``/``quick`` is one
    invocation's arguments; the rows of all invocations are joined."""

    name: str  # the "bench" name in its JSON
    script: str  # relative to the repository root
    title: str
    what: str
    timeout_s: int  # per invocation
    full: tuple[tuple[str, ...], ...] = ((),)
    quick: tuple[tuple[str, ...], ...] = (("--quick",),)


def _sizes(*params: int, clients: int = 2, rounds: int = 3) -> tuple[tuple[str, ...], ...]:
    return tuple(
        (
            "--clients",
            str(clients),
            "--params",
            str(p),
            "--rounds",
            str(rounds),
            "--upload-chunks",
            "1048576",  # a client's default
        )
        for p in params
    )


BENCHES: Final[tuple[BenchSpec, ...]] = (
    BenchSpec(
        "verify",
        "bench/bench_verify.py",
        "Evidence verification cost per TEE type",
        "verifications per second per core of the real vendor samples, warm collateral",
        300,
    ),
    BenchSpec(
        "enrol",
        "bench/bench_enrol.py",
        "Evidence generation on a TPM (swtpm) and enrolment latency",
        "each phase of TPM evidence generation, and GetChallenge + evidence + Enroll over "
        "loopback TLS gRPC for sim and TPM",
        300,
    ),
    BenchSpec(
        "trust_cost",
        "bench/bench_trust_cost.py",
        "Per-round cost of attestation, receipts and ledger",
        "round time with the trust features on against the same run with them off "
        "(alternating runs, real server and client processes)",
        420,
        full=(("--params", "10000000", "--rounds", "5", "--pairs", "2"),),
    ),
    BenchSpec(
        "iot",
        "bench/bench_iot.py",
        "IoT client peak memory",
        "peak RSS of a real client process through a round with a 100,000-parameter model, "
        "per update encoding; an idle client; a run under a hard memory limit",
        300,
    ),
    BenchSpec(
        "silo",
        "bench/bench_silo.py",
        "Silo update streaming throughput",
        "a large update streamed end to end with hashing and signing through real server "
        "and client processes, and peak memory against the model size",
        420,
        full=(("--mib", "500"),),
    ),
    BenchSpec(
        "server_memory",
        "bench/bench_server_memory.py",
        "Server memory and round time against the number of clients",
        "server peak RSS and round time as the number of clients grows at a fixed model size",
        420,
        full=(
            (
                "--clients",
                "2,10,30,100",
                "--params",
                "1000000",
                "--rounds",
                "2",
                "--upload-chunks",
                "1048576",
            ),
        ),
    ),
    BenchSpec(
        "model_size",
        "bench/bench_server_memory.py",
        "Round time and server memory against the model size",
        "the same measurement with 2 clients as the model grows",
        420,
        full=_sizes(100_000, 1_000_000, 10_000_000),
        quick=_sizes(100_000, 1_000_000, rounds=2),
    ),
)

ATTACKS_TIMEOUT_S: Final = 600


@dataclass
class BenchRun:
    spec: BenchSpec
    command: str
    ok: bool
    doc: dict[str, Any] | None = None
    error: str = ""
    seconds: float = 0.0

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self.doc is None:
            return []
        rows = self.doc.get("results", [])
        return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


@dataclass
class AttackRun:
    command: str
    ok: bool
    doc: dict[str, Any] | None = None
    error: str = ""


@dataclass
class Measurements:
    benches: dict[str, BenchRun] = field(default_factory=dict)
    attacks: AttackRun | None = None

    def rows(self, name: str) -> list[dict[str, Any]]:
        run = self.benches.get(name)
        return run.rows if run is not None and run.ok else []


def find_repo(start: Path) -> Path:
    """The fedtee checkout holding ``bench/`` at or above ``start``."""
    for d in (start, *start.parents):
        if (d / "bench" / "_common.py").is_file() and (d / "pyproject.toml").is_file():
            return d
    raise ConfigError(
        f"no fedtee checkout with bench/ at or above {start}: run `fedtee eval report` from "
        "the repository (after the README's set-up), or pass --repo"
    )


def _tail(text: str, n: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= n else "..." + text[-n:]


def _run_json(
    argv: list[str], *, cwd: Path, timeout_s: int, out: Path
) -> tuple[dict[str, Any] | None, str]:
    """Run a command that writes JSON to ``out``; (document, error text)."""
    try:
        done = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout_s} s"
    except OSError as exc:
        return None, f"could not start: {exc}"
    doc: dict[str, Any] | None = None
    if out.is_file():
        try:
            loaded = json.loads(out.read_text())
        except (ValueError, RecursionError) as exc:
            return None, f"wrote malformed JSON: {exc}"
        doc = loaded if isinstance(loaded, dict) else None
    if done.returncode != 0:
        return doc, f"exit {done.returncode}: {_tail(done.stderr or done.stdout)}"
    if doc is None:
        return None, "wrote no JSON document"
    return doc, ""


def run_bench(spec: BenchSpec, *, repo: Path, quick: bool, scratch: Path) -> BenchRun:
    script = repo / spec.script
    invocations = spec.quick if quick else spec.full
    shown = " ; ".join(shlex.join([".venv/bin/python", spec.script, *a]) for a in invocations)
    if not script.is_file():
        return BenchRun(spec, shown, ok=False, error=f"{spec.script} is not in this checkout")
    joined: dict[str, Any] | None = None
    t0 = dt.datetime.now(dt.UTC)
    for i, args in enumerate(invocations):
        out = scratch / f"{spec.name}-{i}.json"
        argv = [sys.executable, str(script), *args, "--no-doc", "--json", str(out)]
        doc, error = _run_json(argv, cwd=repo, timeout_s=spec.timeout_s, out=out)
        if doc is None or error:
            seconds = (dt.datetime.now(dt.UTC) - t0).total_seconds()
            return BenchRun(spec, shown, ok=False, doc=joined, error=error, seconds=seconds)
        if joined is None:
            joined = dict(doc, command=shown)
        else:
            joined["results"] = list(joined.get("results", [])) + list(doc.get("results", []))
    seconds = (dt.datetime.now(dt.UTC) - t0).total_seconds()
    return BenchRun(spec, shown, ok=joined is not None, doc=joined, seconds=seconds)


def run_attacks(*, repo: Path, scratch: Path) -> AttackRun:
    out = scratch / "attacks.json"
    shown = "fedtee eval attacks --json PATH"
    argv = [sys.executable, "-m", "fedtee.cli.main", "eval", "attacks", "--json", str(out)]
    doc, error = _run_json(argv, cwd=repo, timeout_s=ATTACKS_TIMEOUT_S, out=out)
    # The attack command exits 1 when some scenario was not stopped: the table still counts.
    usable = doc is not None and isinstance(doc.get("scenarios"), list)
    return AttackRun(shown, ok=usable, doc=doc if usable else None, error="" if usable else error)


# ---------------------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    mem_gib = 0.0
    try:
        info = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        cpu = found.group(1).strip() if found else cpu
        meminfo = Path("/proc/meminfo").read_text()
        total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
        mem_gib = round(int(total.group(1)) / 2**20, 1) if total else 0.0
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "mem_gib": mem_gib,
        "arch": platform.machine(),
        "gpu": gpu_name(),
        "python": platform.python_version(),
        "fedtee": __version__,
    }


def gpu_name() -> str:
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return "none found (no nvidia-smi)"
    try:
        done = subprocess.run(
            [tool, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "nvidia-smi failed"
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    return "; ".join(names) if done.returncode == 0 and names else "none found"


# ---------------------------------------------------------------------------- helpers


def _pick(row: Mapping[str, Any], *candidates: str) -> Any:
    for key in candidates:
        if key in row and row[key] is not None:
            return row[key]
    lowered = {k.lower(): v for k, v in row.items()}
    for key in candidates:
        for k, v in lowered.items():
            if key.lower() in k and v is not None:
                return v
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "NaN"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def rows_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Every column of a bench's result rows, in order of first appearance."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    return md_table(keys, ([r.get(k) for k in keys] for r in rows))


def _cite(key: str) -> str:
    return f"[{key}](#ref-{key})" if key in CITATIONS else ""


# ---------------------------------------------------------------------------- recommendation


@dataclass(frozen=True)
class Criterion:
    name: str
    weight: float  # 0 for a hard requirement
    value: Callable[[TeeProfile, Measurements], float | bool]
    source: str  # where the value comes from


def verify_rate(tee: str, m: Measurements) -> float | None:
    """Best measured verifications per second for ``tee`` from the verify bench."""
    best: float | None = None
    for r in m.rows("verify"):
        if str(_pick(r, "tee", "evidence", "type")) != tee:
            continue
        rate = _num(_pick(r, "per_s", "verifications_per_s", "rate", "ops_per_s"))
        if rate is not None:
            best = rate if best is None else max(best, rate)
    return best


def _verified_here(p: TeeProfile, m: Measurements) -> bool:
    return p.hardware_root and (verify_rate(p.tee, m) or 0.0) > 0.0


def _attested_here(p: TeeProfile, m: Measurements) -> bool:
    """Evidence made by a real attester implementation on this machine and enrolled."""
    for r in m.rows("enrol"):
        if r.get("tee") == p.tee and "enrolment" in str(r.get("phase", "")) and p.hardware_root:
            return _num(r.get("median_ms")) is not None
    return False


def iot_client_peak_mib(m: Measurements) -> float | None:
    """Highest peak RSS of an IoT client through a round, over the encodings measured."""
    best: float | None = None
    for r in m.rows("iot"):
        if r.get("part") != "round":
            continue
        b = _num(r.get("peak_rss"))
        if b is not None and b > 0:
            best = b / 2**20 if best is None else max(best, b / 2**20)
    return best


def silo_update_mib(m: Measurements) -> float | None:
    for r in m.rows("silo"):
        v = _num(_pick(r, "update_mib", "model_mib", "size_mib"))
        if v is None:
            b = _num(_pick(r, "update_bytes", "model_bytes", "size_bytes"))
            v = None if b is None else b / 2**20
        if v is not None:
            return v
    return None


def _fits_iot(p: TeeProfile, m: Measurements) -> bool:
    if not ({"mcu", "gateway"} & p.device_classes):
        return False
    if p.workload_memory_gib is None:  # the client runs beside the TEE, not inside it
        return True
    need = iot_client_peak_mib(m)
    return need is None or need / 1024 <= p.workload_memory_gib


def _fits_silo(p: TeeProfile, m: Measurements) -> bool:
    if not ({"server", "gpu-server"} & p.device_classes) or p.workload_memory_gib is None:
        return False
    # A silo holds a few model-sized buffers (global, update, optimizer state): 4x.
    need = silo_update_mib(m)
    return need is None or 4 * need / 1024 <= p.workload_memory_gib


def _rate_score(p: TeeProfile, m: Measurements) -> float:
    rate = verify_rate(p.tee, m)
    return 0.0 if rate is None else min(1.0, rate / 1000.0)


IOT_CRITERIA: Final[tuple[Criterion, ...]] = (
    Criterion("ships on IoT-class devices and the client fits", 0, _fits_iot,
              "device classes (tees.py); IoT client peak RSS (bench iot)"),
    Criterion("hardware root of trust", 0, lambda p, m: p.hardware_root, "tees.py"),
    Criterion("run-time isolation of training", 2, lambda p, m: p.runtime_isolation, "tees.py"),
    Criterion("evidence generated and enrolled here", 1, _attested_here, "bench enrol"),
    Criterion("real evidence verified here", 1, _verified_here, "bench verify"),
    Criterion("server verification rate (per 1,000/s)", 1, _rate_score, "bench verify"),
    Criterion("maturity (of 3)", 1, lambda p, m: p.maturity / 3, "tees.py"),
)  # fmt: skip

SILO_CRITERIA: Final[tuple[Criterion, ...]] = (
    Criterion("ships on servers and holds the model", 0, _fits_silo,
              "device classes, workload memory (tees.py); update size (bench silo)"),
    Criterion("hardware root of trust", 0, lambda p, m: p.hardware_root, "tees.py"),
    Criterion("run-time isolation of training", 3, lambda p, m: p.runtime_isolation, "tees.py"),
    Criterion("confidential GPU", 2, lambda p, m: p.confidential_gpu, "tees.py, literature"),
    Criterion("runs the client unmodified", 1, lambda p, m: p.unmodified_app, "tees.py"),
    Criterion("real evidence verified here", 1, _verified_here, "bench verify"),
    Criterion("server verification rate (per 1,000/s)", 1, _rate_score, "bench verify"),
    Criterion("maturity (of 3)", 1, lambda p, m: p.maturity / 3, "tees.py"),
)  # fmt: skip


@dataclass(frozen=True)
class Ranking:
    use_case: str
    criteria: tuple[Criterion, ...]
    table: tuple[tuple[TeeProfile, tuple[float | bool, ...], float | None], ...]  # None: out

    @property
    def ranked(self) -> list[tuple[TeeProfile, float]]:
        scored = [(p, s) for p, _, s in self.table if s is not None]
        return sorted(scored, key=lambda ps: (-ps[1], -ps[0].maturity, ps[0].tee))


def recommend(use_case: str, m: Measurements) -> Ranking:
    criteria = IOT_CRITERIA if use_case == "iot" else SILO_CRITERIA
    table = []
    for p in PROFILES:
        values = tuple(c.value(p, m) for c in criteria)
        passes = all(bool(v) for c, v in zip(criteria, values, strict=True) if c.weight == 0)
        score = (
            sum(c.weight * float(v) for c, v in zip(criteria, values, strict=True))
            if passes
            else None
        )
        table.append((p, values, score))
    return Ranking(use_case, criteria, tuple(table))


def explain(r: Ranking) -> str:
    ranked = r.ranked
    if not ranked:
        return "No TEE type meets the hard requirements."
    best, best_score = ranked[0]
    lines = [f"**{best.name}** scores highest ({best_score:.2f})."]
    if len(ranked) > 1:
        second, second_score = ranked[1]
        index = {p.tee: values for p, values, _ in r.table}
        wins = [
            c.name
            for c, a, b in zip(r.criteria, index[best.tee], index[second.tee], strict=True)
            if c.weight and float(a) > float(b)
        ]
        losses = [
            c.name
            for c, a, b in zip(r.criteria, index[best.tee], index[second.tee], strict=True)
            if c.weight and float(a) < float(b)
        ]
        gap = best_score - second_score
        verdict = "an equivalent choice" if gap < 0.25 else "the runner-up"
        if not wins and not losses:
            lines[0] = (
                f"**{best.name}** and **{second.name}** tie ({best_score:.2f}) on every "
                "criterion measured here: either is recommended."
            )
            verdict = ""
        if verdict:
            lines.append(
                f"{second.name} ({second_score:.2f}) is {verdict}; {best.tee} is ahead on "
                f"{', '.join(wins) or 'no weighted criterion'}"
                + (f" and behind on {', '.join(losses)}" if losses else "")
                + "."
            )
    out = [p.name for p, _, s in r.table if s is None]
    if out:
        lines.append(f"Excluded by a hard requirement: {', '.join(out)}.")
    return " ".join(lines)


# ---------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class PlotSpec:
    bench: str
    file: str
    title: str
    x: tuple[str, ...]
    y: tuple[str, ...]
    xlabel: str
    ylabel: str
    group: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()  # x values left out (e.g. reference rows)


PLOTS: Final[tuple[PlotSpec, ...]] = (
    PlotSpec("server_memory", "round_time_vs_clients.png", "Round time against clients",
             ("clients",), ("round_s_median", "round_s"), "clients", "round time (s)",
             ("params",)),
    PlotSpec("server_memory", "server_memory_vs_clients.png", "Server peak memory against clients",
             ("clients",), ("server_peak_mib",), "clients", "server peak RSS (MiB)", ("params",)),
    PlotSpec("model_size", "round_time_vs_model_size.png", "Round time against model size",
             ("params",), ("round_s_median", "round_s"), "parameters (float32)", "round time (s)",
             ("clients",)),
    PlotSpec("model_size", "server_memory_vs_model_size.png",
             "Server peak memory against model size", ("params",), ("server_peak_mib",),
             "parameters (float32)", "server peak RSS (MiB)", ("clients",)),
    PlotSpec("verify", "verify_rate.png", "Verifications per second per core",
             ("tee",), ("verifications_per_s", "per_s"), "evidence type", "verifications/s",
             skip=("floor",)),
)  # fmt: skip


def _series(
    spec: PlotSpec, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[tuple[Any, float]]]:
    out: dict[str, list[tuple[Any, float]]] = {}
    for r in rows:
        x = _pick(r, *spec.x)
        y = _num(_pick(r, *spec.y))
        if x is None or y is None or x in spec.skip:
            continue
        group = _pick(r, *spec.group) if spec.group else None
        label = "" if group is None else f"{spec.group[0]} = {_fmt(group)}"
        points = out.setdefault(label, [])
        same = [i for i, (px, _) in enumerate(points) if px == x]
        if same:  # several rows for one x (e.g. two vectors of one TEE): keep the best
            i = same[0]
            points[i] = (x, max(points[i][1], y))
        else:
            points.append((x, y))
    return out


def make_plots(m: Measurements, out_dir: Path) -> tuple[list[tuple[PlotSpec, Path]], str]:
    """PNG plots of what was measured; (made, note about what could not be made)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "matplotlib is not installed (`pip install -e .[eval]`): no plots"
    made: list[tuple[PlotSpec, Path]] = []
    for spec in PLOTS:
        series = _series(spec, m.rows(spec.bench))
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.6))
        categorical = any(not isinstance(x, int | float) for s in series.values() for x, _ in s)
        for label, points in sorted(series.items()):
            if categorical:
                ax.bar([str(x) for x, _ in points], [y for _, y in points], label=label or None)
            else:
                points.sort(key=lambda xy: float(xy[0]))
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o",
                        label=label or None)  # fmt: skip
        if not categorical and spec.x[0] == "params":
            ax.set_xscale("log")
        ax.set_title(spec.title)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        if any(label for label in series):
            ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / spec.file
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((spec, path))
    return made, ""


# ---------------------------------------------------------------------------- rendering


def _tee_section(p: TeeProfile, m: Measurements) -> str:
    rate = verify_rate(p.tee, m)
    lines = [
        f"### {p.name} (`{p.tee}`)",
        "",
        f"- **Isolation**: {p.isolation}.",
        f"- **What the evidence proves**: code: {p.proves_code}; platform: "
        f"{p.proves_platform}; configuration: {p.proves_config}.",
        f"- **Identity it gives a client**: {p.identity}.",
        f"- **Veracity it gives an update**: {p.veracity}.",
        f"- **Memory limits**: {p.memory_limits}.",
        f"- **Maturity and tooling**: {p.maturity_text}. Tooling: {p.tooling}.",
        f"- **In fedtee**: {p.fedtee_support}."
        + (f" Measured here: {rate:,.0f} verifications/s per core." if rate else ""),
        "- **Residual risks**:",
    ]
    lines += [f"  - {risk}" + (f" ({_cite(c)})" if c else "") for risk, c in p.risks]
    if p.literature:
        lines.append("- **From the literature** (not measurable on this machine):")
        lines += [f"  - {f.figure} ({_cite(f.citation)})" for f in p.literature]
    return "\n".join(lines)


def _bench_section(run: BenchRun, data_rel: str) -> str:
    head = f"### {run.spec.title}\n\nWhat: {run.spec.what}. Command: `{run.command}`"
    if not run.ok:
        return f"{head}.\n\n**Not measured**: {run.error or 'no result'}."
    doc = run.doc or {}
    m = doc.get("machine", {}) if isinstance(doc.get("machine"), dict) else {}
    load = m.get("loadavg")
    extra = f"; load average at start {load}" if load else ""
    return (
        f"{head} ({run.seconds:.0f} s; data: [`{data_rel}/{run.spec.name}.json`]"
        f"({data_rel}/{run.spec.name}.json){extra}).\n\n{rows_table(run.rows)}"
    )


def _attack_section(run: AttackRun | None, data_rel: str) -> str:
    head = "## Attacks: what the TEE features stop\n\n"
    if run is None:
        return head + "**Not run** (`--no-attacks`)."
    if not run.ok or run.doc is None:
        return head + f"**Not measured**: `{run.command}` failed: {run.error}."
    scenarios = [s for s in run.doc.get("scenarios", []) if isinstance(s, dict)]
    rows = []
    stopped_only_by_tee = 0
    for s in scenarios:
        without = str(s.get("without_attestation", "-"))
        if s.get("rejected") and without.startswith("accepted"):
            stopped_only_by_tee += 1
        rows.append(
            (
                s.get("id"),
                s.get("expected_reason"),
                s.get("observed_reason"),
                "stopped" if s.get("rejected") else "NOT STOPPED",
                s.get("honest_completed"),
                s.get("ledger_recorded"),
                without,
            )
        )
    total = len(scenarios)
    stopped = sum(1 for s in scenarios if s.get("rejected"))
    return (
        head
        + f"From `{run.command}` (data: [`{data_rel}/attacks.json`]({data_rel}/attacks.json)). "
        f"With attestation and receipts on, {stopped} of {total} attacks were stopped with "
        f"their expected reason; {stopped_only_by_tee} of them would have been accepted by "
        "the same server with attestation and receipts off.\n\n"
        + md_table(
            (
                "scenario",
                "expected",
                "observed",
                "with TEE features",
                "honest round done",
                "ledger",
                "without attestation",
            ),
            rows,
        )
        + "\n\nWhat remains: attestation proves which code computed an update, not that the "
        "data it trained on was honest. A poisoned but honestly computed update (label "
        "flipping, a backdoor in local data) carries a valid receipt from approved code; only "
        "the server's update checks (norm bound, shape and finiteness) and robust aggregation "
        "limit it, and the norm bound stops only crude scaling."
    )


def _ranking_table(r: Ranking) -> str:
    headers = ["TEE", *(f"{c.name} (w={c.weight:g})" if c.weight else f"{c.name} (required)"
                       for c in r.criteria), "score"]  # fmt: skip
    rows = []
    for p, values, score in sorted(r.table, key=lambda t: -(t[2] if t[2] is not None else -1)):
        rows.append([p.tee, *values, "excluded" if score is None else round(score, 2)])
    return md_table(headers, rows)


def render(
    *,
    m: Measurements,
    info: Mapping[str, Any],
    quick: bool,
    command: str,
    plots: Sequence[tuple[PlotSpec, Path]],
    plot_note: str,
    data_rel: str,
) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    iot, silo = recommend("iot", m), recommend("silo", m)
    measured = [b for b in m.benches.values() if b.ok]
    parts = [
        "# Evaluation: TEEs for federated learning",
        "",
        "<!-- generated by `fedtee eval report`; edit src/fedtee/eval/ instead -->",
        "",
        f"- Generated {now} by `{command}` ({'quick' if quick else 'full'} mode).",
        f"- Machine: {info['cpu']}, {info['cores']} cores, {info['mem_gib']} GiB RAM, "
        f"{info['arch']}; GPU: {info['gpu']}; Python {info['python']}; fedtee {info['fedtee']}.",
        f"- Measurements taken here: {len(measured)} of {len(m.benches)} benchmarks"
        + (", plus the attack suite" if m.attacks and m.attacks.ok else "")
        + ". Every figure below is either from one of them (command and JSON named beside "
        "it) or from the literature (citation in brackets, see References).",
        "",
        "## The two questions",
        "",
        "**Can TEEs verify the identity of clients?** Yes, where the client's key is bound "
        "into hardware evidence that chains to a vendor root: "
        + ", ".join(p.tee for p in PROFILES if p.hardware_root)
        + " all do, and fedtee verifies each offline against the vendors' real roots "
        "(measured rates below). The identity is the platform's (a chip, a TPM, a device key) "
        "plus the code measurement; it is only as good as the policy of reference values and "
        "the deployment's handling of TCB recovery.",
        "",
        "**Can TEEs ensure the veracity of client remote execution?** Only those that isolate "
        "the training process at run time ("
        + ", ".join(p.tee for p in PROFILES if p.runtime_isolation)
        + ") make the receipt mean 'this code computed this update and nothing changed it'. "
        "TPM and PSA attest what was loaded at boot and start, not what runs afterwards. "
        "None of them can tell an honestly computed update on poisoned data from a good one "
        "(see Attacks).",
        "",
        "## Per TEE type",
        "",
        md_table(
            (
                "TEE",
                "isolation",
                "run-time isolation",
                "hardware root",
                "workload memory",
                "confidential GPU",
                "maturity",
            ),
            (
                (
                    p.tee,
                    p.isolation,
                    p.runtime_isolation,
                    p.hardware_root,
                    "outside the TEE"
                    if p.workload_memory_gib is None
                    else f"up to {p.workload_memory_gib:g} GiB",
                    p.confidential_gpu,
                    f"{p.maturity}/3",
                )
                for p in PROFILES
            ),
        ),
        "",
        *(_tee_section(p, m) + "\n" for p in PROFILES),
        "## Measured here",
        "",
        *(_bench_section(b, data_rel) + "\n" for b in m.benches.values()),
    ]
    if plots:
        parts += ["### Plots", ""]
        parts += [f"![{s.title}]({data_rel}/{p.name})\n" for s, p in plots]
    elif plot_note:
        parts += [f"Plots: {plot_note}.", ""]
    parts += [
        _attack_section(m.attacks, data_rel),
        "",
        "## Recommendations",
        "",
        "Computed by `fedtee.eval.report.recommend` from the tables above: hard requirements "
        "exclude a TEE type; weighted criteria score the rest. Change a measurement or a "
        "property and the recommendation follows.",
        "",
        "### IoT devices (tens of MB, small models)",
        "",
        explain(iot),
        "",
        _ranking_table(iot),
        "",
        "### Deep-learning silos (large models, GPUs)",
        "",
        explain(silo),
        "",
        _ranking_table(silo),
        "",
        "## References",
        "",
        *(f'- <a id="ref-{c.key}"></a>[{c.key}] {c.text}. <{c.url}>' for c in CITATIONS.values()),
        "",
    ]
    return "\n".join(parts)


def check_report(text: str) -> list[str]:
    """Problems with a rendered report (empty when well formed)."""
    problems = []
    for heading in ("# Evaluation", "## Per TEE type", "## Measured here", "## Recommendations",
                    "## References", "### IoT devices", "### Deep-learning silos"):  # fmt: skip
        if heading not in text:
            problems.append(f"missing section {heading!r}")
    for p in PROFILES:
        if f"(`{p.tee}`)" not in text:
            problems.append(f"no section for {p.tee}")
    for key in set(re.findall(r"\(#ref-([\w-]+)\)", text)):
        if f'id="ref-{key}"' not in text:
            problems.append(f"citation {key} has no reference entry")
    if "scores highest" not in text and "No TEE type" not in text:
        problems.append("no recommendation")
    return problems


def generate(
    *,
    repo: Path,
    out: Path,
    quick: bool,
    only: Sequence[str] = (),
    attacks: bool = True,
    command: str = "fedtee eval report",
    progress: Callable[[str], None] = lambda s: None,
) -> tuple[Path, Measurements]:
    """Run the measurements and write the report to ``out`` with its data and plots."""
    unknown = set(only) - {b.name for b in BENCHES}
    if unknown:
        raise ConfigError(
            f"unknown benchmark(s) {sorted(unknown)}; known: {[b.name for b in BENCHES]}"
        )
    data_dir = out.parent / out.stem
    data_dir.mkdir(parents=True, exist_ok=True)
    m = Measurements()
    with tempfile.TemporaryDirectory(prefix="fedtee-eval-") as tmp:
        scratch = Path(tmp)
        for spec in BENCHES:
            if only and spec.name not in only:
                continue
            progress(f"running {spec.script} ...")
            run = run_bench(spec, repo=repo, quick=quick, scratch=scratch)
            progress(f"  {spec.name}: " + (f"ok in {run.seconds:.0f} s" if run.ok else run.error))
            m.benches[spec.name] = run
            if run.doc is not None:
                (data_dir / f"{spec.name}.json").write_text(json.dumps(run.doc, indent=2) + "\n")
        if attacks:
            progress("running fedtee eval attacks ...")
            m.attacks = run_attacks(repo=repo, scratch=scratch)
            progress("  attacks: " + ("ok" if m.attacks.ok else m.attacks.error))
            if m.attacks.doc is not None:
                (data_dir / "attacks.json").write_text(json.dumps(m.attacks.doc, indent=2) + "\n")
    plots, note = make_plots(m, data_dir)
    text = render(
        m=m,
        info=machine(),
        quick=quick,
        command=command,
        plots=plots,
        plot_note=note,
        data_rel=data_dir.name,
    )
    out.write_text(text)
    return out, m
