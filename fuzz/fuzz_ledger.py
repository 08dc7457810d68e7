"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to ledger JSON-lines files (fedtee.ledger.log.verify_ledger).

Run: scripts/fuzz.sh ledger --seconds 60   (seeds: fuzz/corpus/ledger/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("ledger")
