"""The federation ledger: an append-only, hash-chained JSON-lines file, checkpointed by the server.

Each line is one entry, in canonical JSON (sorted keys, no spaces, ASCII)::

    {"body":{...},"hash":"<hex>","kind":"receipt","prev_hash":"<hex>","seq":7}

``hash = SHA-256(HASH_DOMAIN || canonical({"body","kind","prev_hash","seq"}))``, and
``prev_hash`` is the previous entry's hash (64 zeros for the first). A verifier insists that
each line is exactly the canonical encoding of what it parsed, so one changed byte anywhere
breaks either the syntax, the canonical form, a hash, a link or a signature.

Entry kinds and bodies (bytes as lower-case hex, times as Unix ms):
- ``genesis``: federation_id, server_public_key (DER SPKI), unix_ms; always entry 0.
- ``enrolment``: client_id, public_key (DER SPKI), tee, hardware_backed, attestation (the
  attestation result as a JSON string), unix_ms.
- ``rejection``: client_id | null, round | null, reason (a stable Reason code), message, unix_ms.
- ``receipt``: client_id, round, receipt (canonical receipt bytes), signature, accepted,
  reason | null, unix_ms.
- ``aggregation``: round, inputs (receipt hashes, see ``receipts.receipt_hash``),
  input_model_digest, output_model_digest, strategy, unix_ms.
- ``checkpoint``: seq and head (the entry it covers: the one just before it), unix_ms,
  signature by the server key over ``CHECKPOINT_DOMAIN || canonical({federation_id, head,
  seq, unix_ms})``.

:func:`verify_ledger` re-checks all of it offline and returns the lineage of the final model:
for each aggregation, the accepted receipts of enrolled clients that produced it, and that its
input is the previous aggregation's output.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedtee import identity
from fedtee.errors import LedgerError, Reason, StorageError, UpdateRejected, VerificationError
from fedtee.ledger.receipts import Receipt, SignedReceipt, receipt_hash, verify_receipt

HASH_DOMAIN = b"fedtee/v1/ledger-entry\x00"
CHECKPOINT_DOMAIN = b"fedtee/v1/ledger-checkpoint\x00"
ZERO_HASH = "0" * 64
MAX_LEDGER_BYTES = 1 << 30
MAX_LINE_BYTES = 1 << 20

_ENTRY_KEYS = frozenset({"seq", "prev_hash", "kind", "body", "hash"})


# --- canonical encoding ----------------------------------------------------------------------


def canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def entry_hash(*, seq: int, prev_hash: str, kind: str, body: Mapping[str, Any]) -> str:
    payload = canonical_json({"seq": seq, "prev_hash": prev_hash, "kind": kind, "body": dict(body)})
    return hashlib.sha256(HASH_DOMAIN + payload).hexdigest()


def _checkpoint_message(*, federation_id: str, seq: int, head: str, unix_ms: int) -> bytes:
    return canonical_json(
        {"federation_id": federation_id, "seq": seq, "head": head, "unix_ms": unix_ms}
    )


# --- body schemas ----------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_hex(v: Any) -> bool:
    if not isinstance(v, str) or len(v) % 2:
        return False
    try:
        return bytes.fromhex(v).hex() == v  # lower-case, no spaces
    except ValueError:
        return False


def _is_digest(v: Any) -> bool:
    return _is_hex(v) and len(v) == 64


_Check = Callable[[Any], bool]
_STR: _Check = lambda v: isinstance(v, str)  # noqa: E731
_BOOL: _Check = lambda v: isinstance(v, bool)  # noqa: E731
_OPT_STR: _Check = lambda v: v is None or isinstance(v, str)  # noqa: E731
_OPT_INT: _Check = lambda v: v is None or _is_int(v)  # noqa: E731
_DIGESTS: _Check = lambda v: isinstance(v, list) and all(_is_digest(x) for x in v)  # noqa: E731

_SCHEMAS: dict[str, dict[str, _Check]] = {
    "genesis": {"federation_id": _STR, "server_public_key": _is_hex, "unix_ms": _is_int},
    "enrolment": {
        "client_id": _STR,
        "public_key": _is_hex,
        "tee": _STR,
        "hardware_backed": _BOOL,
        "attestation": _STR,
        "unix_ms": _is_int,
    },
    "rejection": {
        "client_id": _OPT_STR,
        "round": _OPT_INT,
        "reason": _STR,
        "message": _STR,
        "unix_ms": _is_int,
    },
    "receipt": {
        "client_id": _STR,
        "round": _is_int,
        "receipt": _is_hex,
        "signature": _is_hex,
        "accepted": _BOOL,
        "reason": _OPT_STR,
        "unix_ms": _is_int,
    },
    "aggregation": {
        "round": _is_int,
        "inputs": _DIGESTS,
        "input_model_digest": _is_digest,
        "output_model_digest": _is_digest,
        "strategy": _STR,
        "unix_ms": _is_int,
    },
    "checkpoint": {"seq": _is_int, "head": _is_digest, "unix_ms": _is_int, "signature": _is_hex},
}


@dataclass(frozen=True, kw_only=True)
class Entry:
    seq: int
    prev_hash: str
    kind: str
    body: Mapping[str, Any]
    hash: str

    def line(self) -> bytes:
        return canonical_json(
            {
                "seq": self.seq,
                "prev_hash": self.prev_hash,
                "kind": self.kind,
                "body": dict(self.body),
                "hash": self.hash,
            }
        )


# --- writer ----------------------------------------------------------------------------------


class LedgerWriter:
    """Appends entries to a JSON-lines file; every append is flushed and fsynced.

    Thread-safe. Use :meth:`create` for a new federation and :meth:`open` after a restart
    (which re-verifies the file and drops a torn final line left by a crash mid-write).
    """

    def __init__(
        self, path: Path, *, federation_id: str, server_key: identity.PrivateKey, head: Entry
    ) -> None:
        self.path = Path(path)
        self.federation_id = federation_id
        self._key = server_key
        self._head = head
        self._lock = threading.Lock()

    @classmethod
    def create(
        cls, path: Path, *, federation_id: str, server_key: identity.PrivateKey, now_ms: int
    ) -> LedgerWriter:
        path = Path(path)
        if path.exists() and path.stat().st_size > 0:
            raise LedgerError(f"{path} already exists; use LedgerWriter.open to continue it")
        body = {
            "federation_id": federation_id,
            "server_public_key": identity.public_key_der(server_key).hex(),
            "unix_ms": now_ms,
        }
        genesis = _make_entry(seq=0, prev_hash=ZERO_HASH, kind="genesis", body=body)
        _append_line(path, genesis.line())
        return cls(path, federation_id=federation_id, server_key=server_key, head=genesis)

    @classmethod
    def open(cls, path: Path, *, server_key: identity.PrivateKey) -> LedgerWriter:
        path = Path(path)
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            # A crash during an append leaves a torn last line; it was never acknowledged.
            keep = data.rfind(b"\n") + 1
            with open(path, "r+b") as fh:
                fh.truncate(keep)
                os.fsync(fh.fileno())
            data = data[:keep]
        report = verify_ledger(data, server_public_key=identity.public_key_der(server_key))
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        head = _parse_line(last, 0, strict_seq=False)
        return cls(path, federation_id=report.federation_id, server_key=server_key, head=head)

    @property
    def head(self) -> Entry:
        return self._head

    def _append(self, kind: str, body: Mapping[str, Any]) -> Entry:
        with self._lock:
            entry = _make_entry(
                seq=self._head.seq + 1, prev_hash=self._head.hash, kind=kind, body=body
            )
            _append_line(self.path, entry.line())
            self._head = entry
            return entry

    def enrolment(
        self,
        *,
        client_id: str,
        public_key: bytes,
        tee: str,
        hardware_backed: bool,
        attestation_json: str,
        now_ms: int,
    ) -> Entry:
        return self._append(
            "enrolment",
            {
                "client_id": client_id,
                "public_key": public_key.hex(),
                "tee": tee,
                "hardware_backed": hardware_backed,
                "attestation": attestation_json,
                "unix_ms": now_ms,
            },
        )

    def rejection(
        self,
        *,
        reason: Reason,
        message: str,
        now_ms: int,
        client_id: str | None = None,
        round: int | None = None,
    ) -> Entry:
        return self._append(
            "rejection",
            {
                "client_id": client_id,
                "round": round,
                "reason": reason.value,
                "message": message,
                "unix_ms": now_ms,
            },
        )

    def receipt(
        self,
        *,
        client_id: str,
        round: int,
        signed: SignedReceipt,
        accepted: bool,
        now_ms: int,
        reason: Reason | None = None,
    ) -> Entry:
        return self._append(
            "receipt",
            {
                "client_id": client_id,
                "round": round,
                "receipt": signed.receipt.hex(),
                "signature": signed.signature.hex(),
                "accepted": accepted,
                "reason": None if reason is None else reason.value,
                "unix_ms": now_ms,
            },
        )

    def aggregation(
        self,
        *,
        round: int,
        inputs: Sequence[bytes],
        input_model_digest: bytes,
        output_model_digest: bytes,
        strategy: str,
        now_ms: int,
    ) -> Entry:
        return self._append(
            "aggregation",
            {
                "round": round,
                "inputs": [h.hex() for h in inputs],
                "input_model_digest": input_model_digest.hex(),
                "output_model_digest": output_model_digest.hex(),
                "strategy": strategy,
                "unix_ms": now_ms,
            },
        )

    def checkpoint(self, *, now_ms: int) -> Entry:
        """Sign the current head with the server key."""
        with self._lock:
            head = self._head
            message = _checkpoint_message(
                federation_id=self.federation_id, seq=head.seq, head=head.hash, unix_ms=now_ms
            )
            signature = identity.sign(self._key, domain=CHECKPOINT_DOMAIN, message=message)
            body = {
                "seq": head.seq,
                "head": head.hash,
                "unix_ms": now_ms,
                "signature": signature.hex(),
            }
            entry = _make_entry(seq=head.seq + 1, prev_hash=head.hash, kind="checkpoint", body=body)
            _append_line(self.path, entry.line())
            self._head = entry
            return entry


def _make_entry(*, seq: int, prev_hash: str, kind: str, body: Mapping[str, Any]) -> Entry:
    body = dict(body)
    return Entry(
        seq=seq,
        prev_hash=prev_hash,
        kind=kind,
        body=body,
        hash=entry_hash(seq=seq, prev_hash=prev_hash, kind=kind, body=body),
    )


def _append_line(path: Path, line: bytes) -> None:
    """Append one line durably, or leave the file as it was and raise StorageError.

    A half-written line (disk full) would make every later entry unreadable, so on failure
    the file is cut back to its previous length.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StorageError(f"cannot open ledger {path}: {exc}") from exc
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError as exc:
            os.ftruncate(fd, size)
            raise StorageError(f"ledger append failed: {exc}") from exc
    finally:
        os.close(fd)


# --- verification ----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Contribution:
    client_id: str
    receipt_hash: str
    update_digest: str
    num_examples: int
    measurement: str
    tee: str
    hardware_backed: bool
    attestation_status: str | None  # "status" of the enrolment's attestation result, if any


@dataclass(frozen=True, kw_only=True)
class RoundLineage:
    round: int
    strategy: str
    input_model_digest: str
    output_model_digest: str
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True, kw_only=True)
class LedgerReport:
    federation_id: str
    server_public_key: str
    entries: int
    head: str
    last_checkpoint_seq: int | None
    unsigned_tail: int  # entries after the last checkpoint (not covered by a signature)
    enrolled_clients: tuple[str, ...]
    rejections: int
    rejected_receipts: int
    lineage: tuple[RoundLineage, ...]
    final_model_digest: str | None
    key_from_ledger: bool = field(default=False)  # no --server-key given: trust on first use

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "federation_id": self.federation_id,
            "server_public_key": self.server_public_key,
            "server_key_source": "ledger genesis (unpinned)" if self.key_from_ledger else "given",
            "entries": self.entries,
            "head": self.head,
            "last_checkpoint_seq": self.last_checkpoint_seq,
            "unsigned_tail": self.unsigned_tail,
            "enrolled_clients": list(self.enrolled_clients),
            "rejections": self.rejections,
            "rejected_receipts": self.rejected_receipts,
            "final_model_digest": self.final_model_digest,
            "lineage": [
                {
                    "round": r.round,
                    "strategy": r.strategy,
                    "input_model_digest": r.input_model_digest,
                    "output_model_digest": r.output_model_digest,
                    "contributions": [c.__dict__ for c in r.contributions],
                }
                for r in self.lineage
            ],
        }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard constant {name}")


def _parse_line(line: bytes, index: int, *, strict_seq: bool = True) -> Entry:
    where = f"entry {index}"
    if len(line) > MAX_LINE_BYTES:
        raise LedgerError(f"{where}: line exceeds {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(
            line.decode("ascii"), object_pairs_hook=_no_duplicates, parse_constant=_reject_constant
        )
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise LedgerError(f"{where}: not canonical JSON: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != _ENTRY_KEYS:
        raise LedgerError(f"{where}: entry must have exactly {sorted(_ENTRY_KEYS)}")
    seq, prev_hash, kind, body, hash_ = (
        obj["seq"],
        obj["prev_hash"],
        obj["kind"],
        obj["body"],
        obj["hash"],
    )
    if not (_is_int(seq) and _is_digest(prev_hash) and _is_digest(hash_)):
        raise LedgerError(f"{where}: seq, prev_hash or hash has the wrong type")
    if not isinstance(kind, str) or kind not in _SCHEMAS:
        raise LedgerError(f"{where}: unknown kind {kind!r}")
    schema = _SCHEMAS[kind]
    if not isinstance(body, dict) or set(body) != set(schema):
        raise LedgerError(f"{where}: {kind} body must have exactly {sorted(schema)}")
    bad = sorted(name for name, check in schema.items() if not check(body[name]))
    if bad:
        raise LedgerError(f"{where}: {kind} fields {bad} have the wrong type")
    entry = Entry(seq=seq, prev_hash=prev_hash, kind=kind, body=body, hash=hash_)
    if entry.line() != line:
        raise LedgerError(f"{where}: not in canonical encoding")
    if strict_seq and seq != index:
        raise LedgerError(f"{where}: seq is {seq}", reason=Reason.LEDGER_CHAIN_BROKEN)
    return entry


def _broken(message: str) -> LedgerError:
    return LedgerError(message, reason=Reason.LEDGER_CHAIN_BROKEN)


def _bad_signature(message: str) -> LedgerError:
    return LedgerError(message, reason=Reason.LEDGER_SIGNATURE_INVALID)


def _lineage(message: str) -> LedgerError:
    return LedgerError(message, reason=Reason.LEDGER_LINEAGE_BROKEN)


@dataclass
class _Client:
    public_key: identity.PublicKey
    tee: str
    hardware_backed: bool
    attestation_status: str | None


# An enrolment whose attestation result says this was never admitted; nothing it signs may
# reach a model.
_REFUSED_STATUSES = frozenset({"contraindicated"})


def _attestation_status(text: str, where: str) -> str | None:
    try:
        result = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise LedgerError(f"{where}: attestation is not JSON: {exc}") from exc
    if not isinstance(result, dict):
        raise LedgerError(f"{where}: attestation is not a JSON object")
    status = result.get("status")
    if status is not None and not isinstance(status, str):
        raise LedgerError(f"{where}: attestation status is not a string")
    return status


def verify_ledger(data: bytes, *, server_public_key: bytes | None) -> LedgerReport:
    """Re-check a whole ledger offline. Raises LedgerError with the first break found.

    ``server_public_key`` (DER SPKI) pins the key checkpoints must verify under; without it
    the key named in the genesis entry is used and the report says so.
    """
    # 1. Bounds and framing: every entry is one complete line.
    if len(data) > MAX_LEDGER_BYTES:
        raise LedgerError(f"ledger of {len(data)} bytes exceeds {MAX_LEDGER_BYTES}")
    if not data:
        raise LedgerError("ledger is empty")
    if not data.endswith(b"\n"):
        raise LedgerError("ledger does not end with a complete line")
    lines = data[:-1].split(b"\n")

    prev_hash = ZERO_HASH
    federation_id = ""
    server_key: identity.PublicKey | None = None
    server_key_hex = ""
    clients: dict[str, _Client] = {}
    # round -> receipt hash -> (receipt, client at the time)
    accepted: dict[int, dict[str, tuple[Receipt, _Client]]] = {}
    seen_receipts: set[str] = set()
    aggregated_rounds: set[int] = set()
    lineage: list[RoundLineage] = []
    last_output: str | None = None
    last_checkpoint: int | None = None
    rejections = 0
    rejected_receipts = 0

    for index, line in enumerate(lines):
        # 2. Syntax, schema and canonical form.
        entry = _parse_line(line, index)
        where = f"entry {index} ({entry.kind})"
        # 3. The hash chain.
        if entry.prev_hash != prev_hash:
            raise _broken(
                f"{where}: prev_hash {entry.prev_hash[:16]}... does not link to {prev_hash[:16]}..."
            )
        computed = entry_hash(
            seq=entry.seq, prev_hash=entry.prev_hash, kind=entry.kind, body=entry.body
        )
        if not hmac.compare_digest(computed, entry.hash):
            raise _broken(f"{where}: hash does not match its content")
        body = entry.body

        # 4. What each kind means.
        if (index == 0) != (entry.kind == "genesis"):
            raise LedgerError(f"{where}: the genesis entry must come first and only once")
        if entry.kind == "genesis":
            federation_id = body["federation_id"]
            server_key_hex = body["server_public_key"]
            if server_public_key is not None and server_public_key.hex() != server_key_hex:
                raise _bad_signature(f"{where}: server key differs from the one given")
            server_key = _load_key(bytes.fromhex(server_key_hex), where, _bad_signature)
        elif entry.kind == "enrolment":
            clients[body["client_id"]] = _Client(
                public_key=_load_key(bytes.fromhex(body["public_key"]), where, _lineage),
                tee=body["tee"],
                hardware_backed=body["hardware_backed"],
                attestation_status=_attestation_status(body["attestation"], where),
            )
        elif entry.kind == "rejection":
            rejections += 1
        elif entry.kind == "receipt":
            client = clients.get(body["client_id"])
            if client is None:
                raise _lineage(f"{where}: receipt from {body['client_id']!r}, never enrolled")
            signed = SignedReceipt(
                receipt=bytes.fromhex(body["receipt"]), signature=bytes.fromhex(body["signature"])
            )
            receipt = _verify_receipt(signed, client.public_key, where)
            if (
                receipt.client_id != body["client_id"]
                or receipt.round != body["round"]
                or receipt.federation_id != federation_id
            ):
                raise _lineage(f"{where}: receipt names another client, round or federation")
            rhash = receipt_hash(signed).hex()
            if rhash in seen_receipts:
                raise _lineage(f"{where}: receipt {rhash[:16]}... appears twice")
            seen_receipts.add(rhash)
            if body["accepted"]:
                if client.attestation_status in _REFUSED_STATUSES:
                    raise _lineage(f"{where}: accepted from a client whose attestation failed")
                if body["round"] in aggregated_rounds:
                    raise _lineage(f"{where}: accepted after round {body['round']} aggregated")
                accepted.setdefault(body["round"], {})[rhash] = (receipt, client)
            else:
                rejected_receipts += 1
        elif entry.kind == "aggregation":
            lineage.append(
                _check_aggregation(body, accepted, aggregated_rounds, last_output, where)
            )
            aggregated_rounds.add(body["round"])
            last_output = body["output_model_digest"]
        elif entry.kind == "checkpoint":
            if server_key is None:  # unreachable: genesis is checked to come first
                raise LedgerError(f"{where}: checkpoint before genesis")
            if body["seq"] != index - 1 or body["head"] != prev_hash:
                raise _broken(f"{where}: checkpoint does not cover the entry before it")
            message = _checkpoint_message(
                federation_id=federation_id,
                seq=body["seq"],
                head=body["head"],
                unix_ms=body["unix_ms"],
            )
            if not identity.verify(
                server_key,
                domain=CHECKPOINT_DOMAIN,
                message=message,
                signature=bytes.fromhex(body["signature"]),
            ):
                raise _bad_signature(f"{where}: checkpoint signature does not verify")
            last_checkpoint = index
        prev_hash = entry.hash

    return LedgerReport(
        federation_id=federation_id,
        server_public_key=server_key_hex,
        entries=len(lines),
        head=prev_hash,
        last_checkpoint_seq=last_checkpoint,
        unsigned_tail=len(lines) - 1 - (last_checkpoint if last_checkpoint is not None else -1),
        enrolled_clients=tuple(sorted(clients)),
        rejections=rejections,
        rejected_receipts=rejected_receipts,
        lineage=tuple(lineage),
        final_model_digest=last_output,
        key_from_ledger=server_public_key is None,
    )


def _load_key(der: bytes, where: str, error: Callable[[str], LedgerError]) -> identity.PublicKey:
    try:
        return identity.load_public_key(der)
    except VerificationError as exc:
        raise error(f"{where}: unusable public key: {exc.message}") from exc


def _verify_receipt(signed: SignedReceipt, key: identity.PublicKey, where: str) -> Receipt:
    try:
        return verify_receipt(signed, key)
    except UpdateRejected as exc:
        if exc.reason is Reason.RECEIPT_SIGNATURE_INVALID:
            raise _bad_signature(f"{where}: {exc.message}") from exc
        raise LedgerError(f"{where}: {exc.message}") from exc


def _check_aggregation(
    body: Mapping[str, Any],
    accepted: Mapping[int, Mapping[str, tuple[Receipt, _Client]]],
    aggregated_rounds: set[int],
    last_output: str | None,
    where: str,
) -> RoundLineage:
    rnd: int = body["round"]
    if rnd in aggregated_rounds or (aggregated_rounds and rnd <= max(aggregated_rounds)):
        raise _lineage(f"{where}: round {rnd} does not follow the rounds already aggregated")
    inputs: list[str] = body["inputs"]
    if not inputs or len(set(inputs)) != len(inputs):
        raise _lineage(f"{where}: inputs must be distinct and at least one")
    if last_output is not None and body["input_model_digest"] != last_output:
        raise _lineage(f"{where}: input model is not the previous aggregation's output")
    pool = accepted.get(rnd, {})
    contributions: list[Contribution] = []
    for rhash in inputs:
        if rhash not in pool:
            raise _lineage(
                f"{where}: input {rhash[:16]}... is not an accepted receipt of round {rnd}"
            )
        receipt, client = pool[rhash]
        if receipt.global_model_digest.hex() != body["input_model_digest"]:
            raise _lineage(f"{where}: receipt {rhash[:16]}... trained from another model")
        contributions.append(
            Contribution(
                client_id=receipt.client_id,
                receipt_hash=rhash,
                update_digest=receipt.update_digest.hex(),
                num_examples=receipt.num_examples,
                measurement=receipt.measurement.hex(),
                tee=client.tee,
                hardware_backed=client.hardware_backed,
                attestation_status=client.attestation_status,
            )
        )
    return RoundLineage(
        round=rnd,
        strategy=body["strategy"],
        input_model_digest=body["input_model_digest"],
        output_model_digest=body["output_model_digest"],
        contributions=tuple(contributions),
    )


__all__ = [
    "CHECKPOINT_DOMAIN",
    "HASH_DOMAIN",
    "Contribution",
    "Entry",
    "LedgerReport",
    "LedgerWriter",
    "RoundLineage",
    "canonical_json",
    "entry_hash",
    "verify_ledger",
]
