"""``fedtee ledger verify``: re-check a ledger offline and print the final model's lineage.

Exit codes: 0 the ledger verifies; 1 it does not (the reason code says which check failed);
2 the inputs could not be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedtee import identity
from fedtee.cli._files import read_bounded
from fedtee.errors import ConfigError, LedgerError
from fedtee.ledger.log import MAX_LEDGER_BYTES, LedgerReport, verify_ledger

_MAX_PEM_BYTES = 64 * 1024


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "ledger",
        help="inspect and verify a federation ledger",
        description="Inspect and verify a federation's append-only, hash-chained ledger.",
    )
    commands = group.add_subparsers(dest="ledger_command", metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="re-check a ledger offline and print the lineage of the final model",
        description=(
            "Re-check every hash link, every server checkpoint signature, every receipt "
            "signature against its client's enrolled key, and that each aggregation used only "
            "accepted receipts of enrolled clients of that round. Prints the lineage of the "
            "final model. Exits 0 when the ledger verifies, 1 when it does not."
        ),
    )
    verify.add_argument("path", type=Path, help="the ledger file (JSON lines) the server wrote")
    verify.add_argument(
        "--server-key",
        type=Path,
        metavar="PEM",
        help=(
            "the server's public key or certificate (PEM) that checkpoints must be signed by; "
            "without it the key recorded in the ledger itself is used (weaker: a forger could "
            "replace both), and the output says so"
        ),
    )
    verify.add_argument(
        "--json", action="store_true", help="print the report as JSON instead of text"
    )
    verify.set_defaults(handler=_verify)
    group.set_defaults(handler=lambda _args: (group.print_help(), 2)[1])


def _server_key_der(path: Path) -> bytes:
    pem = read_bounded(path, _MAX_PEM_BYTES)
    try:
        key: Any = (
            x509.load_pem_x509_certificate(pem).public_key()
            if b"CERTIFICATE" in pem
            else serialization.load_pem_public_key(pem)
        )
        der: bytes = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM public key or certificate: {exc}") from exc
    identity.load_public_key(der)  # insist on P-256, like the server's signing key
    return der


def _verify(args: argparse.Namespace) -> int:
    data = read_bounded(args.path, MAX_LEDGER_BYTES)
    key = _server_key_der(args.server_key) if args.server_key is not None else None
    try:
        report = verify_ledger(data, server_public_key=key)
    except LedgerError as exc:
        if args.json:
            print(json.dumps({"ok": False, "reason": exc.reason.value, "message": exc.message}))
        else:
            print(f"LEDGER INVALID [{exc.reason.value}] {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_text(report)
    return 0


def _print_text(report: LedgerReport) -> None:
    print(f"ledger OK: federation {report.federation_id}, {report.entries} entries")
    print(f"  head            {report.head}")
    print(f"  last checkpoint entry {report.last_checkpoint_seq}")
    if report.unsigned_tail:
        print(f"  WARNING: {report.unsigned_tail} entries after the last signed checkpoint")
    if report.key_from_ledger:
        print("  WARNING: server key taken from the ledger itself; pass --server-key to pin it")
    print(
        f"  enrolled clients: {len(report.enrolled_clients)}; rejections: {report.rejections}; "
        f"rejected receipts: {report.rejected_receipts}"
    )
    print(f"final model: {report.final_model_digest or '(no aggregation recorded)'}")
    for r in report.lineage:
        print(
            f"  round {r.round} [{r.strategy}] {r.input_model_digest[:16]}... -> "
            f"{r.output_model_digest[:16]}..."
        )
        for c in r.contributions:
            hw = "hardware" if c.hardware_backed else "SIMULATED, not hardware-backed"
            print(
                f"    {c.client_id}: {c.num_examples} examples, tee {c.tee} ({hw}), "
                f"attestation {c.attestation_status or 'unknown'}, "
                f"measurement {c.measurement[:16]}..., receipt {c.receipt_hash[:16]}..."
            )


__all__ = ["register"]
