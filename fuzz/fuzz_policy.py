"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to policy TOML files (fedtee.attest.policy.Policy.from_toml).

Run: scripts/fuzz.sh policy --seconds 60   (seeds: fuzz/corpus/policy/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("policy")
