"""fedtee.ledger: training receipts and the hash-chained, server-checkpointed federation ledger.

- :mod:`fedtee.ledger.receipts`: what a client signs about each update, canonical CBOR.
- :mod:`fedtee.ledger.log`: the append-only ledger the server writes and anyone can verify
  offline (``fedtee ledger verify``).
"""

from __future__ import annotations

from fedtee.ledger.log import (
    Contribution,
    LedgerReport,
    LedgerWriter,
    RoundLineage,
    verify_ledger,
)
from fedtee.ledger.receipts import (
    Receipt,
    SignedReceipt,
    check_receipt,
    receipt_hash,
    sign_receipt,
    verify_receipt,
)

__all__ = [
    "Contribution",
    "LedgerReport",
    "LedgerWriter",
    "Receipt",
    "RoundLineage",
    "SignedReceipt",
    "check_receipt",
    "receipt_hash",
    "sign_receipt",
    "verify_ledger",
    "verify_receipt",
]
