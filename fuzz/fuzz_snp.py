"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to SEV-SNP attestation reports (fedtee.attest.evidence.snp.parse_report
+ describe_report).

Run: scripts/fuzz.sh snp --seconds 60   (seeds: fuzz/corpus/snp/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("snp")
