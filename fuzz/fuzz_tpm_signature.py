"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to TPMT_SIGNATURE structures
(fedtee.attest.evidence.tpm.parse_signature).

Run: scripts/fuzz.sh tpm_signature --seconds 60   (seeds: fuzz/corpus/tpm_signature/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("tpm_signature")
