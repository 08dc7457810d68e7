"""The round loop: who trains, which updates count, and when a round is aggregated.

One :class:`RoundManager` per federation. The gRPC service calls :meth:`task_for`,
:meth:`model_for` and :meth:`submit`; a driver thread calls :meth:`tick`, which opens rounds
and closes them at their deadline, so a client that disconnects or stalls never holds a round
up: the round closes with whatever arrived (aggregated when at least ``min_clients`` updates
were accepted, failed otherwise, and the next round starts from the same model).

An update passes, in this order, before it can reach aggregation (each with its reason):

1. the receipt's signature under the client's enrolled key (RECEIPT_SIGNATURE_INVALID);
2. not the same signed receipt as one seen before (RECEIPT_REPLAYED);
3. federation, round (RECEIPT_ROUND_MISMATCH), client, global model digest and measurement ==
   the code identity the client enrolled with (RECEIPT_MEASUREMENT_MISMATCH);
4. the client was selected for this open round and is within its deadline
   (NOT_SELECTED / ROUND_CLOSED);
5. while streaming: the declared size, the safetensors header as soon as it has arrived, and
   the SHA-256 of the bytes == the receipt's update digest (UPDATE_DIGEST_MISMATCH);
6. the arrays match the global model's names, shapes and dtypes and are finite
   (UPDATE_SHAPE_MISMATCH / UPDATE_NONFINITE).

``check_receipts=False`` exists for ``fedtee eval attacks`` only (never read from a config
file): steps 1 to 3 and the digest in 5 are skipped, to show what receipts stop.

Then the update is durable (artifact fsynced, then the store row), logged in the ledger, and
only a round's recorded updates are aggregated, so a restart loses no accepted update.

The store row and the ledger entry are two writes. The store is the record of what was
accepted; the ledger is brought up to it (:meth:`RoundManager._ledger_round`) when a restarted
server resumes a round and again before any aggregation is logged, so a crash (or a full
disk) between the two writes neither loses an accepted update nor leaves an aggregation whose
inputs the ledger does not show. The same signed receipt sent again while its round is open
is answered as accepted without being counted twice (a client that lost the reply resends);
sent after its round closed it is RECEIPT_REPLAYED, recorded as a rejection, not as a second
receipt (a receipt appears in the ledger once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from fedtee import codec, tensors
from fedtee.codec import Encoding
from fedtee.errors import FedteeError, Reason, StorageError, UpdateRejected
from fedtee.ledger.log import LedgerWriter, verify_ledger
from fedtee.ledger.receipts import (
    Receipt,
    SignedReceipt,
    check_receipt,
    receipt_hash,
    verify_receipt,
)
from fedtee.server.artifacts import Artifact, ArtifactStore, MappedArtifact, ReleasingArrays
from fedtee.server.store import (
    ClientRecord,
    FederationStatus,
    RoundRecord,
    RoundStatus,
    StateStore,
    UpdateRecord,
)
from fedtee.server.strategy import Strategy
from fedtee.server.uploads import PartialUploads
from fedtee.tensors import ModelSpec
from fedtee.wire.messages import Task, TaskKind

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Round 1's global model: safetensors bytes, or a function yielding them in chunks.
InitialModel = bytes | Callable[[], Iterable[bytes]]

# Rejections that show a client lying about its update: it is taken out of the federation.
QUARANTINE_ON = frozenset(
    {
        Reason.RECEIPT_SIGNATURE_INVALID,
        Reason.RECEIPT_FEDERATION_MISMATCH,
        Reason.RECEIPT_CLIENT_MISMATCH,
        Reason.RECEIPT_MODEL_MISMATCH,
        Reason.RECEIPT_MEASUREMENT_MISMATCH,
        Reason.UPDATE_DIGEST_MISMATCH,
    }
)


# Named points between two writes where a test may kill the server (fault injection).
FAULT_UPDATE_RECORDED = "update_recorded"  # store row committed, ledger receipt not yet
FAULT_AGGREGATION_LOGGED = "aggregation_logged"  # ledger aggregation written, store not yet

FaultHook = Callable[[str], None]


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def _ledger_receipt_hashes(data: bytes) -> set[bytes]:
    """Hashes of the receipts a (verified) ledger file records, accepted or not."""
    found: set[bytes] = set()
    for line in data.splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "receipt":
            body = entry["body"]
            signed = SignedReceipt(
                receipt=bytes.fromhex(body["receipt"]), signature=bytes.fromhex(body["signature"])
            )
            found.add(receipt_hash(signed))
    return found


class _UploadParked(UpdateRejected):
    """The stream broke off; what arrived is kept so the client can resume the upload."""


class _StoredUpdate(Mapping[str, NDArray[Any]]):
    """A stored update's tensors (views of its memory map, or decoded lazily), with
    :meth:`block_reader` for a plain safetensors update: FedAvg.accumulate_many then copies
    each block of its tensors from the file with ``pread`` (own descriptor, :meth:`close`)
    and maps none of their pages. :meth:`release` drops the map's resident pages (for the
    lazily decoded ones, which are read through the map)."""

    def __init__(
        self,
        arrays: Mapping[str, NDArray[Any]],
        mapped: MappedArtifact,
        *,
        fd: int | None = None,
        offsets: Mapping[str, int] | None = None,
        digest: bytes = b"",
    ) -> None:
        self._arrays = arrays
        self._mapped = mapped
        self._fd = fd
        self._offsets = offsets or {}
        self._digest = digest

    def block_reader(self, name: str) -> Callable[[int, NDArray[Any]], None] | None:
        fd, base = self._fd, self._offsets.get(name)
        if fd is None or base is None:
            return None
        itemsize = self._arrays[name].itemsize
        digest = self._digest

        def read(start: int, out: NDArray[Any]) -> None:
            try:
                got = os.preadv(fd, [out.data.cast("B")], base + start * itemsize)
            except OSError as exc:  # e.g. EIO: a typed error, like every other storage read
                raise StorageError(
                    f"reading artifact {digest.hex()} failed: {exc}",
                    reason=Reason.STORAGE_FAILED,
                ) from exc
            if got != out.nbytes:
                raise StorageError(
                    f"artifact {digest.hex()} is shorter than its header says",
                    reason=Reason.STORAGE_CORRUPT,
                )

        return read

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getitem__(self, name: str) -> NDArray[Any]:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def release(self) -> None:
        self._mapped.release()


class _AlreadyAccepted(Exception):
    """The same signed receipt again while its round is open: answer it as accepted."""


@dataclass(frozen=True, kw_only=True)
class RoundSettings:
    rounds: int = 10
    clients_per_round: int = 5
    min_clients: int = 1
    round_timeout_ms: int = 60_000
    # Before a round, wait this long for clients_per_round usable clients (after the first
    # round: as many as delivered last time) before starting with at least min_clients.
    start_wait_ms: int = 10_000
    # WAIT tells a client to ask again after N * 1000 / polls_per_s ms for a round of N
    # selected clients, within [min_retry_after_ms, retry_after_ms]: a small federation hears
    # of its next round within tens of ms, while all waiting clients together make about
    # polls_per_s GetTask calls per second (up to the retry_after_ms cap).
    retry_after_ms: int = 500
    min_retry_after_ms: int = 20
    polls_per_s: int = 200
    # Updates checked (shape, finiteness, norm) at once, whatever the number of uploads: each
    # check maps a stored update's tensors, so this bounds the server's memory in N.
    max_concurrent_checks: int = 2
    max_update_norm: float | None = None
    config: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.clients_per_round < 1 or self.min_clients < 1:
            raise ValueError("rounds, clients_per_round and min_clients must be at least 1")
        if self.min_clients > self.clients_per_round:
            raise ValueError("min_clients cannot exceed clients_per_round")
        if self.round_timeout_ms < 1:
            raise ValueError("round_timeout_ms must be positive")
        if not 1 <= self.min_retry_after_ms <= self.retry_after_ms or self.polls_per_s < 1:
            raise ValueError("need 1 <= min_retry_after_ms <= retry_after_ms, polls_per_s >= 1")
        if self.max_concurrent_checks < 1:
            raise ValueError("max_concurrent_checks must be at least 1")

    def wait_ms(self, waiting_clients: int) -> int:
        """retry_after for a WAIT when about ``waiting_clients`` clients are polling."""
        spread = max(1, waiting_clients) * 1000 // self.polls_per_s
        return min(self.retry_after_ms, max(self.min_retry_after_ms, spread))


@dataclass(frozen=True, kw_only=True)
class SubmitResult:
    accepted: bool
    reason: Reason | None = None
    message: str = ""


CLOSE_RETRY_MAX_MS = 60_000  # longest wait between attempts to close a round that failed


def maps_at_once() -> int:
    """How many stored updates a round close opens at the same time: an eighth of the
    process's open-files limit (each keeps two descriptors, its memory map's and the one
    its blocks are read with; the rest is left for connections and the store), at least
    GROUP-sized batches of 16."""
    try:
        import resource
    except ImportError:  # not a Unix: no such limit to respect
        return 1 << 30
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(16, int(soft) // 8)


def aggregate_stored(
    strategy: Strategy,
    *,
    artifacts: ArtifactStore,
    spec: ModelSpec,
    global_arrays: Mapping[str, NDArray[Any]],
    inputs: Sequence[tuple[bytes, int]],
    chunk_bytes: int = 1 << 20,
) -> Artifact:
    """A round close: fold the stored updates ``inputs`` ((artifact digest, num_examples),
    each checked on upload) into a new global model, stored as an artifact.

    Each stored update is re-hashed against its digest (the one its receipt names: a file
    changed on disk since its upload was checked must not count), in a thread pool, one
    update per thread, with ``pread`` (SHA-256 releases the GIL, so updates hash in parallel
    on as many cores as there are, and no file pages stay resident). A strategy with
    ``accumulate_many`` (FedAvg) folds all updates block by block meanwhile, reading plain
    ones with ``pread`` through their block readers (compressed ones through memory maps
    of the same files), and the new model is finalised only after every digest has
    matched: a mismatch raises STORAGE_CORRUPT and nothing is written (the strategy's partial
    sums are dropped by the next ``begin``). A strategy with only ``accumulate`` is handed
    each update after its digest has matched. Once every update has been read, they are
    retired (:meth:`ArtifactStore.retire`): the next writes reuse their page-cache pages.
    """

    def rehash(digest: bytes) -> None:
        for _ in artifacts.iter_chunks(digest, chunk_size=chunk_bytes):
            pass  # iter_chunks hashes as it reads and raises on a mismatch at the end

    def stored(digest: bytes) -> _StoredUpdate:
        # Mapped, not re-hashed; the pages the header parse touched are released at once,
        # so opening thousands of updates costs no resident memory. A plain safetensors
        # update's blocks are then read with pread from each tensor's offset in the file.
        mapped = artifacts.map(digest, verify=False)
        try:
            arrays = codec.open_update(mapped.view, spec=spec, global_arrays=global_arrays)
            offsets: dict[str, int] | None = None
            if not isinstance(arrays, codec.EncodedUpdate):
                header = tensors.parse_header(mapped.view)
                offsets = {t.name: header.data_start + t.begin for t in header.tensors}
        finally:
            mapped.release()
        fd = artifacts.open_fd(digest) if offsets else None
        return _StoredUpdate(arrays, mapped, fd=fd, offsets=offsets, digest=digest)

    strategy.begin(spec)
    many = getattr(strategy, "accumulate_many", None)
    workers = max(1, min(len(inputs), os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedtee-rehash")
    try:
        rehashed = [pool.submit(rehash, digest) for digest, _ in inputs]
        try:
            if callable(many):
                # In batches the open-files limit allows (a round of thousands of updates
                # would otherwise fail with EMFILE); after the first batch accumulate_many
                # folds one update at a time, slower but with the same result. Each
                # batch's maps close when its list is dropped.
                batch = maps_at_once()
                for start in range(0, len(inputs), batch):
                    part = inputs[start : start + batch]
                    opened: list[_StoredUpdate] = []
                    try:
                        for digest, _ in part:
                            opened.append(stored(digest))
                        many([(u, n) for u, (_, n) in zip(opened, part, strict=True)])
                    finally:
                        for update in opened:
                            update.close()
            else:
                for (digest, n), check in zip(inputs, rehashed, strict=True):
                    check.result()
                    update = stored(digest)
                    try:
                        strategy.accumulate(update, n)
                    finally:
                        update.close()
        except UpdateRejected:
            # A stored update that fails its checks now was changed on disk: say so.
            for check in rehashed:
                check.result()
            raise
        for check in rehashed:
            check.result()  # StorageError(STORAGE_CORRUPT): nothing is finalised
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    # Every update has been read for the last time (an audit reads them from disk again):
    # the writers that come next, this new model's first, drop their page-cache pages as
    # they need the room (ArtifactStore.retire says why).
    artifacts.retire(digest for digest, _ in inputs)
    # Encoded straight from the strategy's arrays, chunk by chunk, to disk.
    return artifacts.put_chunks(tensors.encode_stream(strategy.finalize()).chunks(chunk_bytes))


class RoundManager:
    """Thread-safe; state transitions hold one lock, streaming does not."""

    def __init__(
        self,
        *,
        federation_id: str,
        store: StateStore,
        artifacts: ArtifactStore,
        ledger: LedgerWriter,
        strategy: Strategy,
        settings: RoundSettings,
        clock: Clock,
        chunk_bytes: int = 1 << 20,
        max_update_bytes: int = 1 << 32,
        fault_hook: FaultHook | None = None,
        check_receipts: bool = True,
        uploads: PartialUploads | None = None,
    ) -> None:
        self.federation_id = federation_id
        self._uploads = uploads if uploads is not None else PartialUploads(artifacts)
        self._fault = fault_hook or (lambda _point: None)
        self._store = store
        self._artifacts = artifacts
        self._ledger = ledger
        self._strategy = strategy
        self._settings = settings
        self._clock = clock
        self._chunk_bytes = chunk_bytes
        self._max_update_bytes = max_update_bytes
        self._check_receipts = check_receipts
        if not check_receipts:
            log.warning("INSECURE: receipts are NOT checked (evaluation only)")
        self._lock = threading.RLock()
        self._checks = threading.BoundedSemaphore(settings.max_concurrent_checks)
        self._open: RoundRecord | None = None
        self._deadline_ms = 0
        self._spec: ModelSpec | None = None
        self._global: Mapping[str, NDArray[Any]] | None = None
        # The open round's global model as this process hashed it when it loaded it (or
        # wrote it): (digest, its file's ArtifactStore.identity then). Downloads of it are not
        # hashed again while its file's identity is unchanged (see model_chunks).
        self._global_checked: tuple[bytes, tuple[int, ...]] | None = None
        self._seen_receipts: set[bytes] = set()
        self._waiting_since_ms: int | None = None
        self._next_round = 1
        self._next_model: bytes | None = None
        self._finished = False
        self._retry_close = False
        # A close that failed (e.g. a stored update no longer matches its digest) is retried
        # with backoff, not on every tick: each attempt re-hashes and folds every update.
        self._close_failures = 0
        self._next_close_ms = 0
        self._last_delivered = 0
        # Selected clients of the open round whose update was rejected: they will not deliver,
        # so the round need not wait for its deadline on their account.
        self._rejected_in_round: set[str] = set()
        # The open round's selection and the clients with an accepted update in it, in memory:
        # GetTask and every submission ask, and with thousands of clients a store query each
        # time made a round quadratic.
        self._selected: frozenset[str] = frozenset()
        self._delivered: set[str] = set()
        self._logged_aggregation: tuple[int, bytes] | None = None
        # Receipt hashes the ledger holds an entry for (the store may be ahead after a crash).
        self._ledgered: set[bytes] = set()

    # --- start / resume --------------------------------------------------------------------

    def start(self, *, initial_model: InitialModel) -> None:
        """Create or resume the federation. ``initial_model`` is safetensors bytes, or a
        function returning them in chunks (a large model is streamed into the artifact
        store, never held whole; it is only called when no round has completed)."""
        now_ms = _ms(self._clock())
        with self._lock:
            fed = self._store.create_federation(
                federation_id=self.federation_id,
                config={"rounds": self._settings.rounds},
                now_ms=now_ms,
            )
            for rnd in self._store.rounds(self.federation_id):
                for upd in self._store.updates(self.federation_id, rnd.number, accepted_only=False):
                    self._seen_receipts.add(upd.receipt_hash)
            self._ledgered = _ledger_receipt_hashes(self._ledger.path.read_bytes())
            point = self._store.resume_point(self.federation_id)
            last = max((r.number for r in self._store.rounds(self.federation_id)), default=0)
            if point.open_round is None:
                self._next_round = last + 1
                # No round completed yet (or only failed ones): start from the initial model.
                self._next_model = point.global_model_digest or self._put_initial(initial_model)
                self._finished = fed.status is FederationStatus.FINISHED or last >= (
                    self._settings.rounds
                )
                if self._finished and fed.status is not FederationStatus.FINISHED:
                    self._store.set_federation_status(self.federation_id, FederationStatus.FINISHED)
                return
            rnd = point.open_round
            self._next_round = rnd.number
            self._next_model = rnd.global_model_digest
            if self._recover_aggregated(rnd, now_ms=now_ms):
                return
            self._ledger_round(rnd.number)
            self._resume_open(rnd, now_ms=now_ms)
            log.info(
                "resumed open round %d with %d accepted updates",
                rnd.number,
                len(point.accepted_in_open_round),
            )
            if len(point.accepted_in_open_round) >= len(rnd.selected):
                # Every selected client had delivered when the old process died.
                self._close(now_ms=now_ms)

    def _put_initial(self, initial_model: InitialModel) -> bytes:
        if isinstance(initial_model, bytes):
            return self._artifacts.put(initial_model).digest
        return self._artifacts.put_chunks(initial_model()).digest

    def _recover_aggregated(self, rnd: RoundRecord, *, now_ms: int) -> bool:
        """The old process may have died between logging a round's aggregation and marking
        it completed in the store: finish that bookkeeping instead of aggregating twice."""
        report = verify_ledger(self._ledger.path.read_bytes(), server_public_key=None)
        done = [r for r in report.lineage if r.round == rnd.number]
        if not done:
            return False
        output = bytes.fromhex(done[-1].output_model_digest)
        if not self._artifacts.exists(output):
            return False
        self._store.complete_round(
            federation_id=self.federation_id,
            number=rnd.number,
            output_model_digest=output,
            now_ms=now_ms,
        )
        log.info("round %d had been aggregated before the restart; marked completed", rnd.number)
        self._ledger.checkpoint(now_ms=now_ms)
        self._after_close(rnd, next_model=output)
        return True

    def _after_close(self, rnd: RoundRecord, *, next_model: bytes) -> None:
        self._next_model = next_model
        self._open = None
        self._rejected_in_round = set()
        self._uploads.clear()  # partial uploads of a closed round can never complete
        self._selected = frozenset()
        self._delivered = set()
        self._next_round = rnd.number + 1
        if rnd.number >= self._settings.rounds:
            self._finished = True
            self._store.set_federation_status(self.federation_id, FederationStatus.FINISHED)
            log.info("federation %s finished", self.federation_id)

    def _resume_open(self, rnd: RoundRecord, *, now_ms: int) -> None:
        self._set_open(rnd)
        # Clients lost their connection with the old process; give them a fresh window.
        self._deadline_ms = max(rnd.deadline_ms, now_ms + self._settings.round_timeout_ms)
        self._load_global(rnd.global_model_digest)

    def _set_open(self, rnd: RoundRecord) -> None:
        self._open = rnd
        self._selected = frozenset(rnd.selected)
        self._delivered = {u.client_id for u in self._store.updates(self.federation_id, rnd.number)}

    def _load_global(self, digest: bytes) -> None:
        # Views of a memory map, read tensor by tensor: holding the round's global model
        # costs no model-sized buffer (see ArtifactStore.map_arrays). A model this process
        # has just aggregated and written, hashing it as it went, is not hashed again; one
        # from an earlier process, or the initial model, is. Either way this process has
        # hashed it once for this round, which model_chunks relies on.
        written = self._logged_aggregation  # set only by this process's own closes
        fresh = written is not None and written[1] == digest
        self._global_checked = None
        arrays = self._artifacts.map_arrays(digest, verify=not fresh)
        self._global_checked = (digest, self._artifacts.identity(digest))
        self._global = arrays
        self._spec = ModelSpec.of(arrays)

    # --- state queries ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def open_round(self) -> RoundRecord | None:
        return self._open

    @property
    def deadline_ms(self) -> int:
        """Deadline of the open round (Unix ms); 0 when none is open."""
        return self._deadline_ms if self._open is not None else 0

    def task_for(self, client: ClientRecord) -> Task:
        with self._lock:
            if self._finished:
                return Task(kind=TaskKind.FINISHED, federation_id=self.federation_id)
            rnd = self._open
            # Clients of the open round (or of the next, when none is open) ask again soon;
            # clients left out of an open round wait the full retry_after_ms.
            if rnd is None:
                retry_ms = self._settings.wait_ms(self._settings.clients_per_round)
            elif client.id in self._selected:
                retry_ms = self._settings.wait_ms(len(self._selected))
            else:
                retry_ms = self._settings.retry_after_ms
            wait = Task(
                kind=TaskKind.WAIT,
                retry_after_ms=retry_ms,
                federation_id=self.federation_id,
            )
            if rnd is None or client.id not in self._selected or client.id in self._delivered:
                return wait
            return Task(
                kind=TaskKind.TRAIN,
                round=rnd.number,
                global_model_digest=rnd.global_model_digest,
                global_model_size=self._artifacts.get(rnd.global_model_digest).size,
                config=dict(self._settings.config),
                deadline_unix_ms=self._deadline_ms,
                federation_id=self.federation_id,
            )

    def model_chunks(self, *, round: int, digest: bytes, offset: int) -> Iterator[bytes]:
        """Chunks of a round's global model; only models this federation handed out."""
        with self._lock:
            # The open round from memory: its stored row carries the whole selection, and
            # every selected client downloads once per round.
            rnd = self._open
            if rnd is None or rnd.number != round:
                rnd = self._store.get_round(self.federation_id, round)
            if rnd is None or rnd.global_model_digest != digest:
                raise UpdateRejected(
                    f"round {round} has no global model {digest.hex()[:16]}",
                    reason=Reason.MODEL_DIGEST_MISMATCH,
                )
            size = self._artifacts.get(digest).size
            checked = self._global_checked
        if offset > size:
            raise UpdateRejected(f"offset {offset} is past the model's {size} bytes")
        # The open round's model was hashed when the round opened; its downloads are not
        # hashed again while its file is unchanged (same identity: no write through the
        # file system since). Any other model, or a changed file, is hashed as it is served,
        # and a mismatch withholds the last chunk. Every client checks the digest of what it
        # received in any case, so a model corrupted on the medium without a write is
        # refused by the clients (model_digest_mismatch) rather than by the server.
        verify = checked is None or checked != (digest, self._artifacts.identity(digest))
        return iter(
            self._artifacts.iter_chunks(
                digest, chunk_size=self._chunk_bytes, offset=offset, verify=verify
            )
        )

    def model_size(self, digest: bytes) -> int:
        return self._artifacts.get(digest).size

    # --- updates ---------------------------------------------------------------------------

    def submit(
        self,
        client: ClientRecord,
        *,
        signed: SignedReceipt,
        size: int,
        chunks: Iterable[bytes | memoryview],
        encoding: Encoding = Encoding.SAFETENSORS,
        offset: int = 0,
    ) -> SubmitResult:
        """Check, stream in and record one update; rejections are recorded, never raised
        (except storage failures). ``offset`` > 0 resumes an interrupted upload of the same
        signed receipt (:mod:`fedtee.server.uploads`); ``encoding`` is :mod:`fedtee.codec`'s."""
        receipt: Receipt | None = None
        try:
            if self._check_receipts:
                receipt = verify_receipt(signed, client.public_key)
            else:
                receipt = Receipt.decode(signed.receipt)
            rnd = self._precheck(client, signed, receipt, size)
            assert self._spec is not None and self._global is not None
            bound = codec.max_encoded_size(encoding, self._spec)
            if size > bound:
                raise UpdateRejected(
                    f"{encoding.value} update of {size} bytes exceeds {bound} for this model",
                    reason=Reason.MESSAGE_TOO_LARGE,
                )
            artifact = self._stream(
                client.id, receipt_hash(signed), receipt, size=size, offset=offset, chunks=chunks
            )
            # Hashed while it streamed in: no second pass over the file.
            with self._checks:
                arrays = self._open_update(artifact.digest, encoding, verify=False)
                tensors.check_update(
                    arrays,
                    spec=self._spec,
                    global_arrays=self._global,
                    max_norm=self._settings.max_update_norm,
                )
                del arrays  # the map's pages go before the next check starts
            return self._record(client, signed, receipt, rnd, artifact.path)
        except _AlreadyAccepted:
            assert receipt is not None
            return SubmitResult(
                accepted=True,
                message=f"already accepted for round {receipt.round} (counted once)",
            )
        except UpdateRejected as exc:
            # A parked upload, or a resume at the wrong offset, is not a rejection of the
            # receipt: the client may yet resume it or send it again from 0.
            parked = isinstance(exc, _UploadParked) or exc.reason is Reason.UPLOAD_OFFSET_MISMATCH
            self._reject(client, signed, None if parked else receipt, exc)
            return SubmitResult(accepted=False, reason=exc.reason, message=exc.message)

    def _open_update(
        self, digest: bytes, encoding: Encoding | None = None, *, verify: bool = True
    ) -> Mapping[str, NDArray[Any]]:
        """A stored update as named arrays, decoded tensor by tensor as they are read from a
        memory map of its artifact, whose pages are released between tensors: checking or
        aggregating an update of any size holds about one tensor of it in memory."""
        assert self._spec is not None and self._global is not None
        mapped = self._artifacts.map(digest, verify=verify)
        arrays = codec.open_update(
            mapped.view,
            spec=self._spec,
            global_arrays=self._global,
            encoding=encoding,
        )
        return ReleasingArrays(arrays, mapped)

    def upload_status(self, client: ClientRecord, key: bytes) -> tuple[int, int]:
        """(bytes held, declared size) of ``client``'s interrupted upload ``key``."""
        return self._uploads.status(client_id=client.id, key=key, now_ms=_ms(self._clock()))

    def _precheck(
        self, client: ClientRecord, signed: SignedReceipt, receipt: Receipt, size: int
    ) -> RoundRecord:
        with self._lock:
            rhash = receipt_hash(signed)
            if self._check_receipts and rhash in self._seen_receipts:
                accepted = any(
                    u.receipt_hash == rhash and u.client_id == client.id
                    for u in self._store.updates(self.federation_id, receipt.round)
                )
                if accepted and self._open is not None and self._open.number == receipt.round:
                    raise _AlreadyAccepted
                raise UpdateRejected(
                    f"receipt for round {receipt.round} was already submitted"
                    + (" and counted" if accepted else ""),
                    reason=Reason.RECEIPT_REPLAYED,
                )
            rnd = self._open
            if rnd is None:
                raise UpdateRejected("no round is open", reason=Reason.ROUND_CLOSED)
            if self._check_receipts:
                check_receipt(
                    receipt,
                    federation_id=self.federation_id,
                    round=rnd.number,
                    client_id=client.id,
                    global_model_digest=rnd.global_model_digest,
                    update_digest=receipt.update_digest,  # checked against the streamed bytes
                    measurement=client.measurement,
                )
            if client.id not in self._selected:
                raise UpdateRejected(
                    f"{client.id!r} was not selected for round {rnd.number}",
                    reason=Reason.NOT_SELECTED,
                )
            if _ms(self._clock()) > self._deadline_ms:
                raise UpdateRejected(f"round {rnd.number} is closed", reason=Reason.ROUND_CLOSED)
            if not 8 <= size <= self._max_update_bytes:
                raise UpdateRejected(
                    f"update of {size} bytes is outside 8..{self._max_update_bytes}",
                    reason=Reason.MESSAGE_TOO_LARGE if size > 8 else Reason.UPDATE_MALFORMED,
                )
            return rnd

    def _stream(
        self,
        client_id: str,
        key: bytes,
        receipt: Receipt,
        *,
        size: int,
        offset: int,
        chunks: Iterable[bytes | memoryview],
    ) -> Artifact:
        writer = self._uploads.open(
            client_id=client_id, key=key, size=size, offset=offset, now_ms=_ms(self._clock())
        )
        prefix = bytearray()
        header_ok = offset > 0  # only uploads whose header was checked are ever parked
        try:
            for chunk in chunks:
                writer.write(chunk)  # MESSAGE_TOO_LARGE past the declared size
                if not header_ok:
                    prefix += chunk
                    header_ok = tensors.header_from_prefix(prefix, total_size=size) is not None
                    if header_ok:
                        prefix = bytearray()
            if writer.size != size:
                raise UpdateRejected(
                    f"update stream ended after {writer.size} of {size} bytes",
                    reason=Reason.STREAM_STALLED,
                )
        except UpdateRejected as exc:
            if exc.reason is Reason.STREAM_STALLED and header_ok:
                held = writer.size
                if self._uploads.park(
                    client_id=client_id,
                    key=key,
                    size=size,
                    writer=writer,
                    now_ms=_ms(self._clock()),
                ):
                    raise _UploadParked(
                        f"{exc.message}; {held} bytes kept for a resumed upload",
                        reason=Reason.STREAM_STALLED,
                    ) from exc
            writer.abort()
            raise
        except BaseException:
            writer.abort()
            raise
        return writer.commit(
            expected_digest=receipt.update_digest if self._check_receipts else None
        )

    def _record(
        self,
        client: ClientRecord,
        signed: SignedReceipt,
        receipt: Receipt,
        rnd: RoundRecord,
        path: Path,
    ) -> SubmitResult:
        now_ms = _ms(self._clock())
        rhash = receipt_hash(signed)
        if not self._check_receipts:
            # Receipts off (evaluation only): nothing binds a receipt to one round, so the
            # same receipt may count again in a later round.
            rhash = hashlib.sha256(rhash + rnd.number.to_bytes(8, "big")).digest()
        with self._lock:
            if self._open is None or self._open.number != rnd.number:
                raise UpdateRejected(f"round {rnd.number} closed", reason=Reason.ROUND_CLOSED)
            _, created = self._store.record_update(
                federation_id=self.federation_id,
                round=rnd.number,
                client_id=client.id,
                receipt=signed.receipt,
                signature=signed.signature,
                receipt_hash=rhash,
                update_digest=receipt.update_digest,
                artifact_path=str(path),
                num_examples=receipt.num_examples,
                accepted=True,
                now_ms=now_ms,
            )
            self._seen_receipts.add(rhash)
            self._delivered.add(client.id)
            if created:
                log.info("round %d: accepted update from %s", rnd.number, client.id)
            self._fault(FAULT_UPDATE_RECORDED)
            try:
                if rhash not in self._ledgered:
                    self._ledger.receipt(
                        client_id=client.id,
                        round=rnd.number,
                        signed=signed,
                        accepted=True,
                        now_ms=now_ms,
                    )
                    self._ledgered.add(rhash)
            except StorageError:
                # The update is durable in the store; the ledger catches up before the
                # round's aggregation is logged (and on restart).
                log.exception("round %d: ledger append failed; will retry", rnd.number)
            self._close_if_settled(now_ms=now_ms)
        return SubmitResult(accepted=True, message=f"accepted for round {rnd.number}")

    def _close_if_settled(self, *, now_ms: int) -> None:
        """Close the open round early once every selected client has delivered an accepted
        update or had its update rejected (caller holds the lock)."""
        rnd = self._open
        if rnd is None:
            return
        if not self._selected <= self._delivered | self._rejected_in_round:
            return
        self._try_close(now_ms=now_ms)

    def _try_close(self, *, now_ms: int) -> None:
        """Close the open round; if that fails, say why and retry later with backoff (1 s,
        doubling to CLOSE_RETRY_MAX_MS): accepted updates are durable, and every attempt
        re-hashes and folds all of them (caller holds the lock)."""
        rnd = self._open
        if rnd is None or now_ms < self._next_close_ms:
            return
        try:
            self._close(now_ms=now_ms)
        except FedteeError as exc:
            self._close_failures += 1
            wait_ms = min(CLOSE_RETRY_MAX_MS, 1000 << min(self._close_failures - 1, 10))
            self._next_close_ms = now_ms + wait_ms
            log.error(
                "closing round %d failed (%s: %s); attempt %d, next in %.0f s",
                rnd.number,
                exc.reason.value,
                exc.message,
                self._close_failures,
                wait_ms / 1000,
            )
            return
        self._close_failures = 0
        self._next_close_ms = 0
        self._open_next()

    def _open_next(self) -> None:
        """Open the next round right after a close, not on the driver's next tick (caller
        holds the lock). A failure here is the tick's to retry, as a failed tick is: the
        close it follows has succeeded, and the update that settled it stays accepted."""
        if self._finished or self._open is not None:
            return
        try:
            self._maybe_open(now_ms=_ms(self._clock()))
        except Exception:  # the submit that closed the round must not fail for it
            log.exception("opening the next round failed; the round driver retries")

    def _reject(
        self,
        client: ClientRecord,
        signed: SignedReceipt,
        receipt: Receipt | None,
        exc: FedteeError,
    ) -> None:
        now_ms = _ms(self._clock())
        rnd = receipt.round if receipt is not None else None
        log.warning("update from %s rejected: %s", client.id, exc)
        with self._lock:
            self._store.record_rejection(
                federation_id=self.federation_id,
                reason=exc.reason,
                message=exc.message,
                now_ms=now_ms,
                round=rnd,
                client_id=client.id,
            )
            if receipt is not None and receipt_hash(signed) not in self._ledgered:
                self._ledger.receipt(
                    client_id=client.id,
                    round=receipt.round,
                    signed=signed,
                    accepted=False,
                    now_ms=now_ms,
                    reason=exc.reason,
                )
                self._ledgered.add(receipt_hash(signed))
            else:
                # No receipt, or one the ledger already holds (a replay): a receipt appears
                # in the ledger once, so a replay is recorded as a plain rejection.
                self._ledger.rejection(
                    reason=exc.reason,
                    message=exc.message,
                    now_ms=now_ms,
                    client_id=client.id,
                    round=rnd,
                )
            if exc.reason in QUARANTINE_ON:
                self._store.quarantine(client.id, reason=exc.reason, message=exc.message)
            rnd_open = self._open
            if (
                rnd_open is not None
                and rnd == rnd_open.number
                and client.id in self._selected
                and exc.reason is not Reason.RECEIPT_REPLAYED
            ):
                self._rejected_in_round.add(client.id)
                self._close_if_settled(now_ms=now_ms)

    # --- driving ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Open a round when enough clients are enrolled; close one past its deadline."""
        now_ms = _ms(self._clock())
        with self._lock:
            if self._finished:
                return
            if self._open is not None:
                if now_ms > self._deadline_ms and not self._retry_close:
                    log.info("round %d: deadline passed", self._open.number)
                    self._try_close(now_ms=now_ms)
                elif self._retry_close:
                    self._try_close(now_ms=now_ms)
                return
            self._maybe_open(now_ms=now_ms)

    def _maybe_open(self, *, now_ms: int) -> None:
        # Counted in the database: listing every client each tick (20 a second) kept the
        # store busy enough to slow enrolment to a few per second at 5,000 clients.
        usable_count = self._store.count_clients(self.federation_id, usable_at_ms=now_ms)
        s = self._settings
        if usable_count < s.min_clients:
            self._waiting_since_ms = None
            return
        # Wait for a full round of clients, but after a round no longer than needed to see as
        # many as delivered last time (a quarantined cheater must not slow every round).
        target = s.clients_per_round
        if self._last_delivered:
            target = min(target, max(s.min_clients, self._last_delivered))
        if usable_count < target:
            if self._waiting_since_ms is None:
                self._waiting_since_ms = now_ms
            if now_ms - self._waiting_since_ms < s.start_wait_ms:
                return
        self._waiting_since_ms = None
        usable = [c.id for c in self._store.list_clients(self.federation_id, usable_at_ms=now_ms)]
        number = self._next_round
        selected = self._strategy.configure_round(number, usable)[: s.clients_per_round]
        if len(selected) < s.min_clients:
            return
        assert self._next_model is not None
        deadline = now_ms + s.round_timeout_ms
        rnd = self._store.open_round(
            federation_id=self.federation_id,
            number=number,
            global_model_digest=self._next_model,
            selected=selected,
            deadline_ms=deadline,
            now_ms=now_ms,
        )
        self._set_open(rnd)
        self._deadline_ms = deadline
        self._load_global(rnd.global_model_digest)
        shown = ", ".join(selected[:10]) + (
            f" and {len(selected) - 10} more" if len(selected) > 10 else ""
        )
        log.info("round %d opened with %s", number, shown)

    def _close(self, *, now_ms: int) -> None:
        rnd = self._open
        assert rnd is not None
        updates = self._store.updates(self.federation_id, rnd.number)
        self._retry_close = True  # until the store says the round is closed
        if len(updates) >= self._settings.min_clients:
            logged = self._logged_aggregation
            if logged is not None and logged[0] == rnd.number:
                output = logged[1]  # a retry: the ledger already names this round's output
            else:
                self._ledger_round(rnd.number)  # every input's receipt precedes the aggregation
                output = self._aggregate(updates)
                self._ledger.aggregation(
                    round=rnd.number,
                    inputs=[u.receipt_hash for u in updates],
                    input_model_digest=rnd.global_model_digest,
                    output_model_digest=output,
                    strategy=self._strategy.name,
                    now_ms=now_ms,
                )
                self._logged_aggregation = (rnd.number, output)
                self._fault(FAULT_AGGREGATION_LOGGED)
            self._store.complete_round(
                federation_id=self.federation_id,
                number=rnd.number,
                output_model_digest=output,
                now_ms=now_ms,
            )
            next_model = output
            log.info("round %d aggregated from %d updates", rnd.number, len(updates))
        else:
            next_model = rnd.global_model_digest
            self._store.fail_round(
                federation_id=self.federation_id, number=rnd.number, now_ms=now_ms
            )
            log.warning(
                "round %d failed: %d updates, %d needed",
                rnd.number,
                len(updates),
                self._settings.min_clients,
            )
        self._retry_close = False
        self._last_delivered = len(updates)
        self._ledger.checkpoint(now_ms=now_ms)
        self._after_close(rnd, next_model=next_model)

    def _aggregate(self, updates: Sequence[UpdateRecord]) -> bytes:
        assert self._spec is not None and self._global is not None
        return aggregate_stored(
            self._strategy,
            artifacts=self._artifacts,
            spec=self._spec,
            global_arrays=self._global,
            inputs=[(u.update_digest, u.num_examples) for u in updates],
            chunk_bytes=self._chunk_bytes,
        ).digest

    def _ledger_round(self, number: int) -> None:
        """Append a ledger receipt for every accepted update of round ``number`` the ledger
        does not show yet (caller holds the lock). StorageError if the ledger cannot grow."""
        for upd in self._store.updates(self.federation_id, number):
            if upd.receipt_hash in self._ledgered:
                continue
            self._ledger.receipt(
                client_id=upd.client_id,
                round=number,
                signed=SignedReceipt(receipt=upd.receipt, signature=upd.signature),
                accepted=True,
                now_ms=upd.received_ms,
            )
            self._ledgered.add(upd.receipt_hash)

    def completed_rounds(self) -> list[RoundRecord]:
        return [
            r for r in self._store.rounds(self.federation_id) if r.status is RoundStatus.COMPLETED
        ]


__all__ = [
    "FAULT_AGGREGATION_LOGGED",
    "FAULT_UPDATE_RECORDED",
    "QUARANTINE_ON",
    "FaultHook",
    "InitialModel",
    "RoundManager",
    "RoundSettings",
    "SubmitResult",
    "aggregate_stored",
]
