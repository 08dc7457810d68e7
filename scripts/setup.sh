#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: Debian packages (when root),
# a virtual environment in .venv, and fedtee installed into it in editable mode.
# Idempotent: a second run only checks. Source it or run it; it prints what it does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
EXTRAS="${FEDTEE_EXTRAS:-dev,demo,eval}"
# The silo profile's tests need PyTorch (the `torch` extra). This exact CPU build is pinned so
# that a set-up never pulls several GB of another version; set FEDTEE_TORCH= to skip it.
TORCH_PIN="${FEDTEE_TORCH-torch==2.13.0}"

# Debian packages: swtpm and the TSS for the TPM path. Only root can install them;
# others get the TPM tests skipped with a message saying what to install.
APT_PACKAGES=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "setup: not root; skipping Debian packages ${missing[*]} (the TPM path will be skipped)"
  fi
fi
if dpkg -s libtss2-dev >/dev/null 2>&1; then EXTRAS="$EXTRAS,tpm"; fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.fedtee-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${EXTRAS//,/_}-${TORCH_PIN//[^a-z0-9.]/}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing fedtee[$EXTRAS] into .venv (first run takes a minute)"
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install -q -e ".[$EXTRAS]" 2>&1 | grep -v '^WARNING: Location' || true
  if [ -n "$TORCH_PIN" ]; then
    echo "setup: installing $TORCH_PIN into .venv (the silo profile's tests)"
    .venv/bin/python -m pip install -q "$TORCH_PIN" 2>&1 | grep -v '^WARNING: Location' || true
  fi
  .venv/bin/python -c "import fedtee" 
  rm -f .venv/.fedtee-installed-*
  touch "$stamp"
fi
