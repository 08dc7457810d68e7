"""``FederationServer``: the pieces wired together behind one start/stop object.

State lives under ``state_dir`` (the demo's observer and ``fedtee ledger verify`` read it):

- ``state.db``: the SQLite state store (WAL, synchronous=FULL);
- ``artifacts/``: safetensors models and updates, named by SHA-256;
- ``ledger.jsonl``: the hash-chained ledger;
- ``server-identity.key``: the server's ECDSA P-256 identity key (signs credentials and
  ledger checkpoints), created on first start, mode 0600;
- ``ledger-key.pem``: its public half, for ``fedtee ledger verify --server-key``.

A restarted server reopens all of it: the ledger is re-verified, the open round resumes with
the updates already accepted in it, and a finished federation stays finished.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization

from fedtee import identity
from fedtee.attest.model import Attester, CollateralSource, TrustAnchors
from fedtee.errors import CollateralError, ConfigError, Reason
from fedtee.ledger.log import LedgerWriter
from fedtee.memory import FreedMemoryTrimmer
from fedtee.server.artifacts import ArtifactStore
from fedtee.server.credentials import CredentialAuthority
from fedtee.server.gate import EnrolmentGate, Evaluate, GateSettings
from fedtee.server.rounds import FaultHook, InitialModel, RoundManager, RoundSettings
from fedtee.server.self_attestation import DEFAULT_MAX_PER_S, ServerAttestation
from fedtee.server.service import FederationService, add_to_server
from fedtee.server.slots import (
    DEFAULT_MAX_TRANSFERS,
    DEFAULT_SEND_CHUNK_BYTES,
    DEFAULT_TRANSFER_IDLE_S,
    DEFAULT_TRANSFER_WAIT_S,
    RESERVED_WORKERS,
    TransferSlots,
)
from fedtee.server.store import StateStore
from fedtee.server.strategy import FedAvg, Strategy
from fedtee.wire.limits import DEFAULT_LIMITS, WireLimits

log = logging.getLogger(__name__)

NONCE_PURGE_INTERVAL_MS = 60_000
# An expired nonce is kept this long before it is purged, so that a client enrolling just too
# late is told nonce_expired (ask for a new challenge) rather than nonce_unknown.
NONCE_PURGE_GRACE_MS = 60_000


def utc_now() -> datetime:
    return datetime.now(UTC)


class NoCollateral:
    """Collateral source for TEEs that need none (sim, TPM with embedded chains)."""

    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(
            f"no collateral {kind}/{key} configured", reason=Reason.COLLATERAL_MISSING
        )


@dataclass(frozen=True, kw_only=True)
class StatePaths:
    database: Path
    artifacts: Path
    ledger: Path
    server_key: Path  # public key PEM, for ledger verification
    identity_key: Path  # private key PEM

    @classmethod
    def of(cls, state_dir: Path) -> StatePaths:
        return cls(
            database=state_dir / "state.db",
            artifacts=state_dir / "artifacts",
            ledger=state_dir / "ledger.jsonl",
            server_key=state_dir / "ledger-key.pem",
            identity_key=state_dir / "server-identity.key",
        )


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    federation_id: str
    address: str  # host:port; port 0 picks a free one (see FederationServer.port)
    tls_cert_pem: bytes
    tls_key_pem: bytes
    state_dir: Path
    policy: Any  # fedtee.attest.policy.Policy
    trust: TrustAnchors
    # Round 1's global model: safetensors bytes, or a function yielding them in chunks (the
    # CLI streams a model file this way, so the server never holds it whole).
    initial_model: InitialModel
    collateral: CollateralSource = field(default_factory=NoCollateral)
    rounds: RoundSettings = field(default_factory=RoundSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    limits: WireLimits = DEFAULT_LIMITS
    # Handler threads, made as calls need them. A transfer waiting for a slot holds one, so
    # they also bound the slots' wait queue (max_workers - max_transfers - RESERVED_WORKERS):
    # with 32, 100 clients at a 3.8 MiB model and 8 slots mostly found the queue full and
    # slept out server_busy hints (rounds 8.6 s, 14.5 s with 256 KiB uploads); with 128 all
    # of them waited on the server (6.8 s and 6.4 s, less than with no slots at all).
    max_workers: int = 128
    # Calls beyond max_workers wait in a queue up to this many in flight; past it gRPC answers
    # RESOURCE_EXHAUSTED. 128 turned most of 1,000 simultaneous enrolments away (bench_load).
    max_concurrent_rpcs: int = 4096
    upload_grace_ms: int = 5_000  # an upload still running this long after its deadline is cut
    # HTTP/2 BDP probing grows the window of every stream a client opens, so an upload queued
    # behind the workers had about its whole update received into gRPC core's buffers before
    # a handler read any of it: the server's peak grew with the clients (bench_server_memory:
    # 454 -> 313 MiB for 100 clients at a 3.8 MiB model with probing off; round times at
    # P = 10,000,000 with 2 and 10 clients unchanged within noise). Off: 64 KiB windows.
    http2_bdp_probe: bool = False
    # Threads the default FedAvg folds a large tensor on (None: one a core, up to 8); see
    # fedtee.server.strategy.default_fold_threads. Ignored when a strategy is passed in.
    fold_threads: int | None = None
    # Model transfers (downloads and uploads) in flight at once; past it a transfer waits on
    # the server, first come first served, up to transfer_wait_s (in a queue that leaves
    # RESERVED_WORKERS workers for everything else), then is refused with server_busy and a
    # retry_after hint, before any of it is read (fedtee.server.slots). 0: unlimited.
    max_transfers: int = DEFAULT_MAX_TRANSFERS
    transfer_wait_s: float = DEFAULT_TRANSFER_WAIT_S
    # A transfer holding a slot that moves no chunk for this long is cut off (the client
    # resumes it later); the slot goes to the next.
    transfer_idle_s: float = DEFAULT_TRANSFER_IDLE_S
    # Data bytes in one ModelChunk the server sends (at most limits.chunk_bytes, the most it
    # accepts in one; [server] send_chunk_bytes). Each transfer in flight holds a few copies
    # of a chunk on its way through protobuf, gRPC and TLS, so this bounds what downloads
    # add to the server's memory; each chunk also costs both ends a fixed amount of work (a
    # handoff between gRPC's threads per message), while a chunk past the cores' caches
    # costs memory traffic. 512 KiB against 256 KiB: 10 clients at 10,000,000 parameters
    # 2.48-2.69 s per round against 2.67-3.12 s, 2 clients the same; 1 MiB was faster still
    # with 10 clients and slower with 2; 100 clients at a 3.8 MiB model peaked 4 MiB higher
    # with 512 KiB, 9 MiB with 1 MiB (docs/config.md, "Chunk size").
    send_chunk_bytes: int = DEFAULT_SEND_CHUNK_BYTES
    tick_s: float = 0.05
    # After transfers have ended, give freed heap pages back to the system (glibc
    # malloc_trim; fedtee.memory) at most once per this many seconds. Process-wide, so off
    # (0) by default for a library caller; ``fedtee server start`` sets 1.0 ([server]
    # trim_interval_s). 100 clients at a 3.8 MiB model peaked at 154-161 MiB with it, 163-172
    # MiB without (fedtee.memory).
    trim_interval_s: float = 0.0
    # Mutual attestation: the aggregator's own attester (see fedtee.server.self_attestation:
    # build_server_attester); None answers GetServerEvidence with UNIMPLEMENTED.
    attester: Attester | None = None
    server_evidence_per_s: float = DEFAULT_MAX_PER_S  # GetServerEvidence rate limit
    # EVALUATION ONLY (``fedtee eval attacks``): admit any evidence and skip every receipt
    # check, to show what attestation and receipts stop. Deliberately not a server.toml key.
    insecure_no_attestation: bool = False


def _load_or_create_key(paths: StatePaths) -> identity.PrivateKey:
    if paths.identity_key.exists():
        return identity.load_private_key_pem(paths.identity_key.read_bytes())
    key = identity.generate()
    fd = os.open(paths.identity_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(identity.private_key_pem(key))
        fh.flush()
        os.fsync(fh.fileno())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paths.server_key.write_bytes(public_pem)
    return key


class FederationServer:
    """Start it, let clients enrol and train, stop it; start it again to resume."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        clock: Callable[[], datetime] = utc_now,
        strategy: Strategy | None = None,
        evaluate: Evaluate | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.config = config
        self._fault_hook = fault_hook  # tests only: see fedtee.server.rounds.FAULT_*
        self._clock = clock
        self._strategy = strategy or FedAvg(
            clients_per_round=config.rounds.clients_per_round, fold_threads=config.fold_threads
        )
        self._evaluate = evaluate
        self._server: grpc.Server | None = None
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock_fd: int | None = None
        self.port = 0
        self.paths = StatePaths.of(config.state_dir)
        self.store: StateStore | None = None
        self.rounds: RoundManager | None = None
        self.ledger: LedgerWriter | None = None
        # Model transfers in flight; waiting ones hold a worker each, so the queue leaves
        # RESERVED_WORKERS of them to enrolments, tasks and the rest.
        self.slots = TransferSlots(
            config.max_transfers,
            max_waiting=max(config.max_workers - config.max_transfers - RESERVED_WORKERS, 0),
        )
        # Run by the round driver once transfers have ended (the buffers they held are free).
        self.trimmer = FreedMemoryTrimmer(config.trim_interval_s)

    def _now_ms(self) -> int:
        return int(self._clock().timestamp() * 1000)

    def start(self) -> int:
        """Open state, resume, listen; returns the bound port."""
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_state_dir()
        key = _load_or_create_key(self.paths)
        self.store = StateStore.open(str(self.paths.database))
        artifacts = ArtifactStore(self.paths.artifacts, max_bytes=cfg.limits.max_model_bytes)
        swept = artifacts.sweep()  # partial uploads a killed process left in artifacts/.tmp
        if swept:
            log.info("removed %d partial artifact(s) left by an earlier run", swept)
        if self.paths.ledger.exists() and self.paths.ledger.stat().st_size > 0:
            self.ledger = LedgerWriter.open(self.paths.ledger, server_key=key)
            if self.ledger.federation_id != cfg.federation_id:
                raise ConfigError(
                    f"{self.paths.ledger} belongs to federation {self.ledger.federation_id!r}"
                )
        else:
            self.ledger = LedgerWriter.create(
                self.paths.ledger,
                federation_id=cfg.federation_id,
                server_key=key,
                now_ms=self._now_ms(),
            )
        authority = CredentialAuthority(federation_id=cfg.federation_id, key=key)
        gate = EnrolmentGate(
            federation_id=cfg.federation_id,
            store=self.store,
            ledger=self.ledger,
            authority=authority,
            policy=cfg.policy,
            trust=cfg.trust,
            collateral=cfg.collateral,
            clock=self._clock,
            settings=cfg.gate,
            evaluate=self._evaluate,
            insecure_accept_any=cfg.insecure_no_attestation,
        )
        self.rounds = RoundManager(
            federation_id=cfg.federation_id,
            store=self.store,
            artifacts=artifacts,
            ledger=self.ledger,
            strategy=self._strategy,
            settings=cfg.rounds,
            clock=self._clock,
            chunk_bytes=min(cfg.send_chunk_bytes, cfg.limits.chunk_bytes),
            max_update_bytes=cfg.limits.max_model_bytes,
            fault_hook=self._fault_hook,
            check_receipts=not cfg.insecure_no_attestation,
        )
        self.rounds.start(initial_model=cfg.initial_model)
        service = FederationService(
            gate=gate,
            rounds=self.rounds,
            authority=authority,
            store=self.store,
            clock=self._clock,
            limits=cfg.limits,
            upload_grace_ms=cfg.upload_grace_ms,
            server_attestation=self._server_attestation(),
            slots=self.slots,
            transfer_wait_s=cfg.transfer_wait_s,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=cfg.max_workers, thread_name_prefix="fedtee-rpc"
        )
        server = grpc.server(
            self._executor,
            options=[
                *cfg.limits.grpc_options(),
                ("grpc.http2.bdp_probe", int(cfg.http2_bdp_probe)),
            ],
            maximum_concurrent_rpcs=cfg.max_concurrent_rpcs,
        )
        add_to_server(service, server)
        creds = grpc.ssl_server_credentials([(cfg.tls_key_pem, cfg.tls_cert_pem)])
        try:
            self.port = server.add_secure_port(cfg.address, creds)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {cfg.address}: {exc}") from exc
        if self.port == 0:
            raise ConfigError(f"cannot listen on {cfg.address}")
        server.start()
        self._server = server
        self._stop.clear()
        self._driver = threading.Thread(target=self._drive, name="fedtee-rounds", daemon=True)
        self._driver.start()
        log.info("federation %s listening on port %d (TLS)", cfg.federation_id, self.port)
        return self.port

    def _server_attestation(self) -> ServerAttestation | None:
        cfg = self.config
        if cfg.attester is None:
            return None
        from fedtee.wire.tls import server_public_key_der

        log.info(
            "mutual attestation: GetServerEvidence answers with %s evidence bound to the TLS key",
            cfg.attester.tee.value,
        )
        return ServerAttestation(
            attester=cfg.attester,
            tls_public_key=server_public_key_der(cfg.tls_cert_pem),
            max_per_s=cfg.server_evidence_per_s,
        )

    def _lock_state_dir(self) -> None:
        """One server per state directory: two would interleave ledger and store writes."""
        fd = os.open(self.config.state_dir / "server.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(
                f"state directory {self.config.state_dir} is in use by another running "
                "fedtee server; stop it first, or give this one its own state_dir"
            ) from exc
        self._lock_fd = fd

    def _drive(self) -> None:
        assert self.rounds is not None and self.store is not None
        next_purge = 0
        trimmed_after = 0  # transfers ended at the last trim
        while not self._stop.wait(self.config.tick_s):
            try:
                self.rounds.tick()
                ended = self.slots.ended
                if ended != trimmed_after and self.trimmer():
                    trimmed_after = ended
                for client_id in self.slots.expire_idle(self.config.transfer_idle_s):
                    log.warning(
                        "cut off %s's transfer: no chunk moved in %.0f s (its slot is freed)",
                        client_id,
                        self.config.transfer_idle_s,
                    )
                now_ms = self._now_ms()
                if now_ms >= next_purge:
                    # GetChallenge is unauthenticated: expired nonces must not pile up.
                    self.store.purge_nonces(now_ms=now_ms - NONCE_PURGE_GRACE_MS)
                    next_purge = now_ms + NONCE_PURGE_INTERVAL_MS
            except Exception:  # keep driving: a failed tick is retried on the next one
                log.exception("round driver tick failed")

    @property
    def strategy(self) -> Strategy:
        """The aggregation strategy rounds close with (FedAvg unless one was passed in)."""
        return self._strategy

    @property
    def finished(self) -> bool:
        return self.rounds is not None and self.rounds.finished

    def wait_finished(self, timeout_s: float | None = None) -> bool:
        """Block until the federation finishes (True) or the timeout passes (False)."""
        deadline = None if timeout_s is None else self._clock().timestamp() + timeout_s
        while not self.finished:
            if deadline is not None and self._clock().timestamp() > deadline:
                return False
            if self._stop.wait(0.1):
                return self.finished
        return True

    def stop(self, grace_s: float = 1.0) -> None:
        self._stop.set()
        if self._driver is not None:
            self._driver.join(timeout=5)
        if self._server is not None:
            self._server.stop(grace_s).wait(timeout=grace_s + 5)
            self._server = None
        if self._executor is not None:
            # Handlers of cancelled RPCs may still be running: let them finish before the
            # ledger and store are closed, so nothing is written after stop() returns.
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if self.ledger is not None and self.ledger.head.kind != "checkpoint":
            # Sign what was appended since the last round closed (enrolments, rejections).
            self.ledger.checkpoint(now_ms=self._now_ms())
        if self.store is not None:
            self.store.close()
            self.store = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


__all__ = ["FederationServer", "NoCollateral", "ServerConfig", "StatePaths", "utc_now"]
