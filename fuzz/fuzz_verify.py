"""atheris harness for the enrolment gate's verification path.

Feeds libFuzzer's bytes to fuzz/targets.py's `verify` target: SGX/TDX quotes and SEV-SNP
reports (first byte picks which) parsed and fully verified against the embedded vendor roots
and the offline collateral under tests/data, at each real vector's verification time.

Run: scripts/fuzz.sh verify --seconds 60   (seeds: fuzz/corpus/verify/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("verify")
