#!/usr/bin/env bash
# Runs every benchmark (bench/bench_*.py) in turn; each prints its table and rewrites its own
# section of docs/benchmarks.md (plots in docs/bench/). bench_flower.py installs Flower into
# bench/.flower-venv on first use.
#   scripts/bench.sh            full runs (long: bench_flower.py alone takes tens of minutes)
#   scripts/bench.sh --quick    about a minute per bench
# Other arguments (--no-doc, --quick) go to every bench; FEDTEE_BENCH_JSON=DIR also writes
# DIR/<bench>.json; FEDTEE_BENCH_ONLY="flower aggregate" runs only those.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ "${FEDTEE_BENCH_SKIP_SETUP:-}" != "1" ]]; then
  bash scripts/setup.sh
fi
failed=()
for script in bench/bench_*.py; do
  name="$(basename "$script" .py)"
  name="${name#bench_}"
  if [[ -n "${FEDTEE_BENCH_ONLY:-}" && " ${FEDTEE_BENCH_ONLY} " != *" ${name} "* ]]; then
    continue
  fi
  json=()
  if [[ -n "${FEDTEE_BENCH_JSON:-}" ]]; then
    mkdir -p "$FEDTEE_BENCH_JSON"
    json=(--json "$FEDTEE_BENCH_JSON/$name.json")
  fi
  echo "== $script $*"
  if ! .venv/bin/python "$script" "$@" "${json[@]}"; then
    failed+=("$name")
  fi
done
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
