"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to TDX evidence from a raw quote
(fedtee.attest.evidence.tdx.evidence_from_files + describe).

Run: scripts/fuzz.sh tdx --seconds 60   (seeds: fuzz/corpus/tdx/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("tdx")
