"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to simulated-TEE reports (fedtee.attest.evidence.sim.parse_report via
describe).

Run: scripts/fuzz.sh sim --seconds 60   (seeds: fuzz/corpus/sim/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("sim")
