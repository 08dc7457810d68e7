#!/usr/bin/env bash
# Runs the atheris (libFuzzer) harnesses in fuzz/: every one, or the one named.
#
#   scripts/fuzz.sh                    # every harness, 60 s each, one after the other
#   scripts/fuzz.sh dcap --seconds 600 # one harness for 10 minutes
#   scripts/fuzz.sh --list             # the harness names
#
# Each run: -max_total_time=N -rss_limit_mb=512 -timeout=5 (per input). Seeds come from
# fuzz/corpus/<name>/ (read-only here); new inputs go to $FUZZ_WORK/<name>/corpus and crash,
# timeout and OOM inputs to $FUZZ_WORK/<name>/ (default FUZZ_WORK=${TMPDIR:-/tmp}/fedtee-fuzz).
# Exit status: 0 when every harness ran clean, 1 when any found a crash (see docs/fuzzing.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SECONDS_EACH=60
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_EACH="${2:?--seconds needs a number}"; shift 2 ;;
    --seconds=*) SECONDS_EACH="${1#--seconds=}"; shift ;;
    --list) for f in fuzz/fuzz_*.py; do n="${f#fuzz/fuzz_}"; echo "${n%.py}"; done; exit 0 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) ONLY="$1"; shift ;;
  esac
done
case "$SECONDS_EACH" in ''|*[!0-9]*) echo "fuzz.sh: --seconds wants a whole number" >&2; exit 2 ;; esac

if [ ! -x .venv/bin/python ]; then bash scripts/setup.sh; fi
if ! .venv/bin/python -c "import atheris" 2>/dev/null; then
  echo "fuzz.sh: installing atheris into .venv"
  # PyPI has manylinux wheels for CPython 3.8-3.12 on x86_64 (no compiler needed). Elsewhere
  # (other CPUs, musl, newer Pythons) pip builds it from source, which needs clang and
  # libFuzzer (LLVM >= 6); see docs/fuzzing.md.
  if ! .venv/bin/python -m pip install -q atheris; then
    echo "fuzz.sh: atheris could not be installed: no wheel for this platform/Python and" \
         "building it needs clang with libFuzzer (see docs/fuzzing.md). The hypothesis" \
         "property tests (pytest tests/fuzz) cover the same parsers without it." >&2
    exit 3
  fi
fi

if [ -n "$ONLY" ]; then
  if [ ! -f "fuzz/fuzz_${ONLY}.py" ]; then
    echo "fuzz.sh: no harness fuzz/fuzz_${ONLY}.py; try --list" >&2
    exit 2
  fi
  NAMES=("$ONLY")
else
  NAMES=()
  for f in fuzz/fuzz_*.py; do n="${f#fuzz/fuzz_}"; NAMES+=("${n%.py}"); done
fi

WORK="${FUZZ_WORK:-${TMPDIR:-/tmp}/fedtee-fuzz}"
failed=()
for name in "${NAMES[@]}"; do
  out="$WORK/$name"
  mkdir -p "$out/corpus"
  echo "== fuzz $name for ${SECONDS_EACH}s (new inputs: $out/corpus)"
  # The first corpus directory receives new inputs; the committed seeds are only read.
  if .venv/bin/python "fuzz/fuzz_${name}.py" \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=512 -timeout=5 \
      -artifact_prefix="$out/" -print_final_stats=1 \
      "$out/corpus" "fuzz/corpus/$name" >"$out/log.txt" 2>&1; then
    grep -E '^(Done|stat::number_of_executed_units)' "$out/log.txt" | tail -1 || true
  else
    failed+=("$name")
    echo "!! $name: crash; log $out/log.txt; inputs:" $(ls "$out" | grep -E '^(crash|timeout|oom|leak)-' || true)
    grep -E -A30 'Uncaught Python exception|ERROR: libFuzzer' "$out/log.txt" | head -40 || true
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#NAMES[@]} harness(es) ran ${SECONDS_EACH}s each without a crash"
