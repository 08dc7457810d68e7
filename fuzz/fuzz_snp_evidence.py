"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to SEV-SNP report plus certificate table
(fedtee.attest.evidence.snp.evidence_from_files + describe).

Run: scripts/fuzz.sh snp_evidence --seconds 60   (seeds: fuzz/corpus/snp_evidence/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("snp_evidence")
