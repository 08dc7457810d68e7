"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to SGX/TDX DCAP quotes v3/v4/v5 (fedtee.attest.evidence.dcap.parse_quote
+ describe_quote).

Run: scripts/fuzz.sh dcap --seconds 60   (seeds: fuzz/corpus/dcap/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("dcap")
