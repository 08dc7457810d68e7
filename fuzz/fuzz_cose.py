"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to strict CBOR and COSE_Sign1 (fedtee.attest.evidence.cose.loads +
parse_sign1).

Run: scripts/fuzz.sh cose --seconds 60   (seeds: fuzz/corpus/cose/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("cose")
