"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to SGX evidence from a raw quote
(fedtee.attest.evidence.sgx.evidence_from_files + describe).

Run: scripts/fuzz.sh sgx --seconds 60   (seeds: fuzz/corpus/sgx/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("sgx")
