"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to PSA attestation tokens
(fedtee.attest.evidence.psa.evidence_from_files + describe).

Run: scripts/fuzz.sh psa --seconds 60   (seeds: fuzz/corpus/psa/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("psa")
