"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to Arm CCA platform+realm tokens
(fedtee.attest.evidence.cca.evidence_from_files + describe).

Run: scripts/fuzz.sh cca --seconds 60   (seeds: fuzz/corpus/cca/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("cca")
