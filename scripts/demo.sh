#!/usr/bin/env bash
# Sets everything up, then runs `fedtee demo`: a server and 5 attested clients on loopback.
# Extra arguments go to `fedtee demo` (see `fedtee demo --help`), e.g. scripts/demo.sh --tee tpm
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/fedtee demo "$@"
