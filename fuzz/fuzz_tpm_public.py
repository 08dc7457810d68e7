"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to TPM2B_PUBLIC structures (fedtee.attest.evidence.tpm.parse_public).

Run: scripts/fuzz.sh tpm_public --seconds 60   (seeds: fuzz/corpus/tpm_public/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("tpm_public")
