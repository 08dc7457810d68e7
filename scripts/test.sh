#!/usr/bin/env bash
# Sets everything up, then runs lint and the format check (ruff), types (mypy --strict)
# and the whole test suite.
# Extra arguments go to pytest, e.g. scripts/test.sh -k ledger -x
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check src tests bench && .venv/bin/ruff format --check src tests bench
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; exec .venv/bin/python -m pytest "$@"
