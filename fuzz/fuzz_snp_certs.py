"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to SEV-SNP extended-report certificate tables
(fedtee.attest.evidence.snp.parse_cert_table).

Run: scripts/fuzz.sh snp_certs --seconds 60   (seeds: fuzz/corpus/snp_certs/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("snp_certs")
