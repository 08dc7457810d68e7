"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to TPM quotes: raw TPMS_ATTEST or Azure-style JSON
(fedtee.attest.evidence.tpm.evidence_from_files + describe).

Run: scripts/fuzz.sh tpm --seconds 60   (seeds: fuzz/corpus/tpm/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("tpm")
