"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to canonical CBOR receipts (fedtee.ledger.receipts.Receipt.decode).

Run: scripts/fuzz.sh receipts --seconds 60   (seeds: fuzz/corpus/receipts/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("receipts")
