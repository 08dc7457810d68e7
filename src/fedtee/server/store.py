"""The server's state store: federation, clients, nonces, rounds, updates, rejections.

SQLAlchemy 2.0 over SQLite by default (a file in WAL mode with ``synchronous=FULL``), any
SQLAlchemy URL otherwise; :meth:`StateStore.in_memory` gives the same store on SQLite
``:memory:`` for tests and simulations. One test suite runs against both.

Crash safety (a server killed with SIGKILL and restarted):
- every public method is one transaction; a method either happened or did not;
- an update row is written only after its artifact file is durable (the caller commits the
  artifact first, see :mod:`fedtee.server.artifacts`), so an accepted update never points at
  a missing file;
- :meth:`StateStore.resume_point` tells the restarted server the last completed round (and its
  output model) and the round left open with the updates already accepted in it.

Rules kept by the schema itself rather than by callers:
- a nonce is consumed at most once (``UPDATE ... WHERE used = 0``, checked by row count);
- one active enrolment per platform id per federation (a partial unique index), to stop one
  TEE from posing as many clients (sybils);
- one update per (federation, round, client), and one row per signed receipt (its hash is
  unique), so a resubmission is idempotent and a receipt replayed in another round is caught.

Schema changes are additive: a new table is created on open (``create_all`` adds missing
tables and leaves existing ones alone), so a state directory written by an older fedtee still
opens. ``tpm_counters`` was added that way: one row per TPM client, the counters of its last
accepted quote, which the enrolment gate compares with the next one.

Times are integer Unix milliseconds passed in by the caller; the store never reads a clock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool

from fedtee.errors import (
    FedteeError,
    Reason,
    StorageError,
    UpdateRejected,
    VerificationError,
)

SCHEMA_VERSION = 1


class RoundStatus(StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"


class FederationStatus(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    STOPPED = "stopped"


# --- schema ----------------------------------------------------------------------------------


class _Base(DeclarativeBase):
    pass


class _Meta(_Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class _Federation(_Base):
    __tablename__ = "federations"
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    config_json: Mapped[str] = mapped_column(Text)
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32))
    created_ms: Mapped[int] = mapped_column(BigInteger)


class _Client(_Base):
    __tablename__ = "clients"
    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    tee: Mapped[str] = mapped_column(String(32))
    platform_id: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    measurement: Mapped[bytes] = mapped_column(LargeBinary)
    hardware_backed: Mapped[bool] = mapped_column(Boolean)
    credential_expires_ms: Mapped[int] = mapped_column(BigInteger)
    enrolled_ms: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    quarantine_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    quarantine_message: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        # One active enrolment per platform: a second identity on the same TEE is a sybil.
        Index(
            "ix_clients_active_platform",
            "federation_id",
            "platform_id",
            unique=True,
            sqlite_where=text("active AND platform_id IS NOT NULL"),
            postgresql_where=text("active AND platform_id IS NOT NULL"),
        ),
    )


class _Nonce(_Base):
    __tablename__ = "nonces"
    value: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    tee: Mapped[str] = mapped_column(String(32))
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    context: Mapped[bytes] = mapped_column(LargeBinary, default=b"")


class _TpmCounters(_Base):
    __tablename__ = "tpm_counters"
    client_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    federation_id: Mapped[str] = mapped_column(String(256))
    platform_id: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    ak_name: Mapped[bytes] = mapped_column(LargeBinary)
    reset_count: Mapped[int] = mapped_column(BigInteger)
    restart_count: Mapped[int] = mapped_column(BigInteger)
    clock: Mapped[int] = mapped_column(BigInteger)
    recorded_ms: Mapped[int] = mapped_column(BigInteger)
    cleared_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class _Round(_Base):
    __tablename__ = "rounds"
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    global_model_digest: Mapped[bytes] = mapped_column(LargeBinary)
    output_model_digest: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    selected_json: Mapped[str] = mapped_column(Text)
    deadline_ms: Mapped[int] = mapped_column(BigInteger)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    closed_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class _Update(_Base):
    __tablename__ = "updates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"))
    round: Mapped[int] = mapped_column(Integer)
    client_id: Mapped[str] = mapped_column(String(256))
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    receipt_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    update_digest: Mapped[bytes] = mapped_column(LargeBinary)
    artifact_path: Mapped[str] = mapped_column(Text)
    num_examples: Mapped[int] = mapped_column(Integer)
    accepted: Mapped[bool] = mapped_column(Boolean)
    received_ms: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (UniqueConstraint("federation_id", "round", "client_id"),)


class _Rejection(_Base):
    __tablename__ = "rejections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    federation_id: Mapped[str] = mapped_column(String(256))
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    client_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    reason: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


# --- records handed to callers ---------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FederationRecord:
    id: str
    config: Mapping[str, Any]
    current_round: int
    status: FederationStatus
    created_ms: int


@dataclass(frozen=True, kw_only=True)
class ClientRecord:
    id: str
    federation_id: str
    public_key: bytes
    tee: str
    platform_id: bytes | None
    measurement: bytes
    hardware_backed: bool
    credential_expires_ms: int
    enrolled_ms: int
    active: bool
    quarantined: bool
    quarantine_reason: Reason | None
    quarantine_message: str | None


@dataclass(frozen=True, kw_only=True)
class TpmCounters:
    """resetCount, restartCount and clock of a client's last accepted TPM quote.

    ``cleared_ms`` is set when an operator cleared them (``fedtee server forget-client``):
    the next enrolment is then not compared with them.
    """

    platform_id: bytes | None
    ak_name: bytes
    reset_count: int
    restart_count: int
    clock: int
    recorded_ms: int = 0
    cleared_ms: int | None = None

    def as_claims(self) -> dict[str, int]:
        """In the shape of ``VerifiedEvidence.claims``, for ``verify.tpm.check_counters``."""
        return {
            "reset_count": self.reset_count,
            "restart_count": self.restart_count,
            "clock": self.clock,
        }


@dataclass(frozen=True, kw_only=True)
class NonceRecord:
    value: bytes
    client_id: str | None
    tee: str
    expires_ms: int
    context: bytes


@dataclass(frozen=True, kw_only=True)
class RoundRecord:
    federation_id: str
    number: int
    status: RoundStatus
    global_model_digest: bytes
    output_model_digest: bytes | None
    selected: tuple[str, ...]
    deadline_ms: int
    opened_ms: int
    closed_ms: int | None


@dataclass(frozen=True, kw_only=True)
class UpdateRecord:
    federation_id: str
    round: int
    client_id: str
    receipt: bytes
    signature: bytes
    receipt_hash: bytes
    update_digest: bytes
    artifact_path: str
    num_examples: int
    accepted: bool
    received_ms: int


@dataclass(frozen=True, kw_only=True)
class RejectionRecord:
    federation_id: str
    round: int | None
    client_id: str | None
    reason: Reason
    message: str
    created_ms: int


@dataclass(frozen=True, kw_only=True)
class ResumePoint:
    """Where a restarted server picks up."""

    last_completed: RoundRecord | None
    open_round: RoundRecord | None
    accepted_in_open_round: tuple[UpdateRecord, ...]

    @property
    def global_model_digest(self) -> bytes | None:
        """The model the next (or still open) round trains from, if any round ran."""
        if self.open_round is not None:
            return self.open_round.global_model_digest
        if self.last_completed is not None:
            return self.last_completed.output_model_digest
        return None


def _reason(value: str | None) -> Reason | None:
    if value is None:
        return None
    try:
        return Reason(value)
    except ValueError:
        return Reason.INTERNAL


def _client(row: _Client) -> ClientRecord:
    return ClientRecord(
        id=row.id,
        federation_id=row.federation_id,
        public_key=row.public_key,
        tee=row.tee,
        platform_id=row.platform_id,
        measurement=row.measurement,
        hardware_backed=row.hardware_backed,
        credential_expires_ms=row.credential_expires_ms,
        enrolled_ms=row.enrolled_ms,
        active=row.active,
        quarantined=row.quarantined,
        quarantine_reason=_reason(row.quarantine_reason),
        quarantine_message=row.quarantine_message,
    )


def _round(row: _Round) -> RoundRecord:
    return RoundRecord(
        federation_id=row.federation_id,
        number=row.number,
        status=RoundStatus(row.status),
        global_model_digest=row.global_model_digest,
        output_model_digest=row.output_model_digest,
        selected=tuple(json.loads(row.selected_json)),
        deadline_ms=row.deadline_ms,
        opened_ms=row.opened_ms,
        closed_ms=row.closed_ms,
    )


def _update(row: _Update) -> UpdateRecord:
    return UpdateRecord(
        federation_id=row.federation_id,
        round=row.round,
        client_id=row.client_id,
        receipt=row.receipt,
        signature=row.signature,
        receipt_hash=row.receipt_hash,
        update_digest=row.update_digest,
        artifact_path=row.artifact_path,
        num_examples=row.num_examples,
        accepted=row.accepted,
        received_ms=row.received_ms,
    )


def _federation(row: _Federation) -> FederationRecord:
    return FederationRecord(
        id=row.id,
        config=json.loads(row.config_json),
        current_round=row.current_round,
        status=FederationStatus(row.status),
        created_ms=row.created_ms,
    )


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer and a commit is one append; FULL: a commit returns
    # only once it is on disk, which is what "no accepted update lost" needs.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class StateStore:
    """Transactional federation state. Thread-safe: one transaction at a time."""

    def __init__(self, url: str = "sqlite:///fedtee-state.db", *, engine: Engine | None = None):
        try:
            if engine is None:
                if url.startswith("sqlite"):
                    engine = create_engine(url, connect_args={"check_same_thread": False})
                else:
                    engine = create_engine(url, pool_pre_ping=True)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _set_sqlite_pragmas)
            self._engine = engine
            try:
                _Base.metadata.create_all(engine)
            except OperationalError:
                # Another process (a second reader such as the demo's display) created the
                # tables between our existence check and our CREATE; they are there now.
                _Base.metadata.create_all(engine)
            self._sessions = sessionmaker(engine, expire_on_commit=False)
            self._lock = threading.RLock()
            self._check_schema()
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open state store {url!r}: {exc}") from exc

    @classmethod
    def open(cls, path: str) -> StateStore:
        """A SQLite file store at ``path``."""
        return cls(f"sqlite:///{path}")

    @classmethod
    def in_memory(cls) -> StateStore:
        """SQLite ``:memory:`` shared by all threads of this process (one connection)."""
        engine = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        return cls(engine=engine)

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        with self._lock:
            session = self._sessions()
            try:
                with session.begin():
                    yield session
            except FedteeError:
                raise
            except SQLAlchemyError as exc:
                raise StorageError(f"state store transaction failed: {exc}") from exc
            finally:
                session.close()

    def _check_schema(self) -> None:
        with self._tx() as s:
            row = s.get(_Meta, "schema_version")
            if row is None:
                s.add(_Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            elif row.value != str(SCHEMA_VERSION):
                raise StorageError(
                    f"state store schema {row.value} is not {SCHEMA_VERSION}",
                    reason=Reason.STORAGE_CORRUPT,
                )

    # --- federation ------------------------------------------------------------------------

    def create_federation(
        self, *, federation_id: str, config: Mapping[str, Any], now_ms: int
    ) -> FederationRecord:
        """Create it, or return the existing one (a restarted server resumes, config kept)."""
        with self._tx() as s:
            row = s.get(_Federation, federation_id)
            if row is None:
                row = _Federation(
                    id=federation_id,
                    config_json=json.dumps(dict(config), sort_keys=True),
                    current_round=0,
                    status=FederationStatus.RUNNING.value,
                    created_ms=now_ms,
                )
                s.add(row)
                s.flush()
            return _federation(row)

    def get_federation(self, federation_id: str) -> FederationRecord | None:
        with self._tx() as s:
            row = s.get(_Federation, federation_id)
            return None if row is None else _federation(row)

    def set_federation_status(self, federation_id: str, status: FederationStatus) -> None:
        with self._tx() as s:
            row = s.get(_Federation, federation_id)
            if row is None:
                raise StorageError(f"no federation {federation_id!r}")
            row.status = status.value

    # --- nonces ----------------------------------------------------------------------------

    def issue_nonce(
        self,
        *,
        value: bytes,
        tee: str,
        expires_ms: int,
        client_id: str | None = None,
        context: bytes = b"",
    ) -> None:
        with self._tx() as s:
            if s.get(_Nonce, value) is not None:
                raise StorageError("nonce value already issued")
            s.add(
                _Nonce(
                    value=value,
                    client_id=client_id,
                    tee=tee,
                    expires_ms=expires_ms,
                    used=False,
                    context=context,
                )
            )

    def consume_nonce(self, value: bytes, *, now_ms: int) -> NonceRecord:
        """Atomically mark the nonce used and return it; each nonce succeeds exactly once.

        Raises VerificationError with NONCE_UNKNOWN, NONCE_REUSED or NONCE_EXPIRED.
        """
        with self._tx() as s:
            result = s.execute(
                update(_Nonce)
                .where(_Nonce.value == value, _Nonce.used.is_(False))
                .values(used=True)
            )
            row = s.get(_Nonce, value)
            if row is None:
                raise VerificationError("nonce was never issued", reason=Reason.NONCE_UNKNOWN)
            if getattr(result, "rowcount", 0) != 1:
                raise VerificationError("nonce was already used", reason=Reason.NONCE_REUSED)
            record = NonceRecord(
                value=row.value,
                client_id=row.client_id,
                tee=row.tee,
                expires_ms=row.expires_ms,
                context=row.context,
            )
            expired = now_ms >= row.expires_ms
        # Outside the transaction, so the nonce stays burnt even when it had expired.
        if expired:
            raise VerificationError(
                f"nonce expired at {record.expires_ms} (now {now_ms})", reason=Reason.NONCE_EXPIRED
            )
        return record

    def purge_nonces(self, *, now_ms: int) -> int:
        """Delete expired nonces (used or not); returns how many."""
        with self._tx() as s:
            rows = s.scalars(select(_Nonce).where(_Nonce.expires_ms <= now_ms)).all()
            for row in rows:
                s.delete(row)
            return len(rows)

    # --- clients ---------------------------------------------------------------------------

    def enroll_client(
        self,
        *,
        federation_id: str,
        client_id: str,
        public_key: bytes,
        tee: str,
        platform_id: bytes | None,
        measurement: bytes,
        hardware_backed: bool,
        credential_expires_ms: int,
        now_ms: int,
        tpm_counters: TpmCounters | None = None,
    ) -> ClientRecord:
        """Enrol, or re-enrol after expiry (new key, new credential).

        ``tpm_counters`` (TPM clients) replace the stored ones in the same transaction, so an
        enrolment and the counters it was admitted with are recorded together.

        Raises CLIENT_QUARANTINED for a quarantined client and PLATFORM_ALREADY_ENROLLED
        when another active client holds the same platform id.
        """
        with self._tx() as s:
            row = s.get(_Client, client_id)
            if row is not None and row.federation_id != federation_id:
                raise StorageError(f"client {client_id!r} belongs to another federation")
            if row is not None and row.quarantined:
                raise VerificationError(
                    f"client {client_id!r} is quarantined ({row.quarantine_reason})",
                    reason=Reason.CLIENT_QUARANTINED,
                )
            if platform_id is not None:
                other = s.scalars(
                    select(_Client).where(
                        _Client.federation_id == federation_id,
                        _Client.platform_id == platform_id,
                        _Client.active.is_(True),
                        _Client.id != client_id,
                    )
                ).first()
                if other is not None:
                    raise VerificationError(
                        f"platform {platform_id.hex()[:32]} is already enrolled as {other.id!r}",
                        reason=Reason.PLATFORM_ALREADY_ENROLLED,
                    )
            if row is None:
                row = _Client(id=client_id, federation_id=federation_id)
                s.add(row)
            row.public_key = public_key
            row.tee = tee
            row.platform_id = platform_id
            row.measurement = measurement
            row.hardware_backed = hardware_backed
            row.credential_expires_ms = credential_expires_ms
            row.enrolled_ms = now_ms
            row.active = True
            row.quarantined = False
            if tpm_counters is not None:
                counters = s.get(_TpmCounters, client_id)
                if counters is None:
                    counters = _TpmCounters(client_id=client_id, federation_id=federation_id)
                    s.add(counters)
                counters.platform_id = tpm_counters.platform_id
                counters.ak_name = tpm_counters.ak_name
                counters.reset_count = tpm_counters.reset_count
                counters.restart_count = tpm_counters.restart_count
                counters.clock = tpm_counters.clock
                counters.recorded_ms = now_ms
                counters.cleared_ms = None
            try:
                s.flush()
            except IntegrityError as exc:  # a concurrent enrolment won the race
                raise VerificationError(
                    "platform is already enrolled", reason=Reason.PLATFORM_ALREADY_ENROLLED
                ) from exc
            return _client(row)

    def tpm_counters(self, client_id: str) -> TpmCounters | None:
        """The counters of the client's last accepted TPM quote, if it ever enrolled on one."""
        with self._tx() as s:
            row = s.get(_TpmCounters, client_id)
            if row is None:
                return None
            return TpmCounters(
                platform_id=row.platform_id,
                ak_name=row.ak_name,
                reset_count=row.reset_count,
                restart_count=row.restart_count,
                clock=row.clock,
                recorded_ms=row.recorded_ms,
                cleared_ms=row.cleared_ms,
            )

    def clear_tpm_counters(self, client_id: str, *, now_ms: int) -> bool:
        """Mark the client's stored counters cleared (an operator let a rebooted TPM back).

        The row stays, so the next enrolment knows it was let in by an operator and says so
        in the ledger. Returns False when the client has no stored counters.
        """
        with self._tx() as s:
            row = s.get(_TpmCounters, client_id)
            if row is None:
                return False
            row.cleared_ms = now_ms
            return True

    def get_client(self, client_id: str) -> ClientRecord | None:
        with self._tx() as s:
            row = s.get(_Client, client_id)
            return None if row is None else _client(row)

    def list_clients(
        self, federation_id: str, *, usable_at_ms: int | None = None
    ) -> list[ClientRecord]:
        """All clients; with ``usable_at_ms`` only active, unquarantined, unexpired ones."""
        with self._tx() as s:
            query = select(_Client).where(_Client.federation_id == federation_id)
            if usable_at_ms is not None:
                query = query.where(
                    _Client.active.is_(True),
                    _Client.quarantined.is_(False),
                    _Client.credential_expires_ms > usable_at_ms,
                )
            return [_client(r) for r in s.scalars(query.order_by(_Client.id)).all()]

    def count_clients(self, federation_id: str, *, usable_at_ms: int) -> int:
        """How many clients :meth:`list_clients` would return for ``usable_at_ms``, counted
        by the database (the round driver asks every tick)."""
        with self._tx() as s:
            count = s.scalar(
                select(func.count())
                .select_from(_Client)
                .where(
                    _Client.federation_id == federation_id,
                    _Client.active.is_(True),
                    _Client.quarantined.is_(False),
                    _Client.credential_expires_ms > usable_at_ms,
                )
            )
            return int(count or 0)

    def quarantine(self, client_id: str, *, reason: Reason, message: str) -> None:
        """Take the client out of the federation.

        The enrolment stays active, so its platform id stays taken and the same TEE cannot
        come back under a new client id either.
        """
        with self._tx() as s:
            row = s.get(_Client, client_id)
            if row is None:
                raise StorageError(f"no client {client_id!r}")
            row.quarantined = True
            row.quarantine_reason = reason.value
            row.quarantine_message = message

    def deactivate(self, client_id: str) -> None:
        """End an enrolment (the client left); frees its platform id."""
        with self._tx() as s:
            row = s.get(_Client, client_id)
            if row is None:
                raise StorageError(f"no client {client_id!r}")
            row.active = False

    # --- rounds ----------------------------------------------------------------------------

    def open_round(
        self,
        *,
        federation_id: str,
        number: int,
        global_model_digest: bytes,
        selected: Sequence[str],
        deadline_ms: int,
        now_ms: int,
    ) -> RoundRecord:
        """Open round ``number``; re-opening the same open round returns it unchanged."""
        with self._tx() as s:
            fed = s.get(_Federation, federation_id)
            if fed is None:
                raise StorageError(f"no federation {federation_id!r}")
            row = s.get(_Round, (federation_id, number))
            if row is not None:
                if row.status != RoundStatus.OPEN or row.global_model_digest != global_model_digest:
                    raise StorageError(f"round {number} already exists ({row.status})")
                return _round(row)
            still_open = s.scalars(
                select(_Round).where(
                    _Round.federation_id == federation_id, _Round.status == RoundStatus.OPEN
                )
            ).first()
            if still_open is not None:
                raise StorageError(f"round {still_open.number} is still open")
            row = _Round(
                federation_id=federation_id,
                number=number,
                status=RoundStatus.OPEN.value,
                global_model_digest=global_model_digest,
                output_model_digest=None,
                selected_json=json.dumps(list(selected)),
                deadline_ms=deadline_ms,
                opened_ms=now_ms,
                closed_ms=None,
            )
            s.add(row)
            fed.current_round = number
            s.flush()
            return _round(row)

    def complete_round(
        self, *, federation_id: str, number: int, output_model_digest: bytes, now_ms: int
    ) -> RoundRecord:
        with self._tx() as s:
            row = s.get(_Round, (federation_id, number))
            if row is None or row.status != RoundStatus.OPEN:
                raise StorageError(f"round {number} is not open")
            row.status = RoundStatus.COMPLETED.value
            row.output_model_digest = output_model_digest
            row.closed_ms = now_ms
            return _round(row)

    def fail_round(self, *, federation_id: str, number: int, now_ms: int) -> RoundRecord:
        """Close a round without a new model (too few updates); the next round reuses the
        previous global model."""
        with self._tx() as s:
            row = s.get(_Round, (federation_id, number))
            if row is None or row.status != RoundStatus.OPEN:
                raise StorageError(f"round {number} is not open")
            row.status = RoundStatus.FAILED.value
            row.closed_ms = now_ms
            return _round(row)

    def get_round(self, federation_id: str, number: int) -> RoundRecord | None:
        with self._tx() as s:
            row = s.get(_Round, (federation_id, number))
            return None if row is None else _round(row)

    def rounds(self, federation_id: str) -> list[RoundRecord]:
        with self._tx() as s:
            query = select(_Round).where(_Round.federation_id == federation_id)
            return [_round(r) for r in s.scalars(query.order_by(_Round.number)).all()]

    def resume_point(self, federation_id: str) -> ResumePoint:
        with self._tx() as s:
            completed = s.scalars(
                select(_Round)
                .where(
                    _Round.federation_id == federation_id,
                    _Round.status == RoundStatus.COMPLETED,
                )
                .order_by(_Round.number.desc())
            ).first()
            open_row = s.scalars(
                select(_Round).where(
                    _Round.federation_id == federation_id, _Round.status == RoundStatus.OPEN
                )
            ).first()
            accepted: tuple[UpdateRecord, ...] = ()
            if open_row is not None:
                accepted = tuple(
                    _update(u)
                    for u in s.scalars(
                        select(_Update)
                        .where(
                            _Update.federation_id == federation_id,
                            _Update.round == open_row.number,
                            _Update.accepted.is_(True),
                        )
                        .order_by(_Update.id)
                    ).all()
                )
            return ResumePoint(
                last_completed=None if completed is None else _round(completed),
                open_round=None if open_row is None else _round(open_row),
                accepted_in_open_round=accepted,
            )

    # --- updates ---------------------------------------------------------------------------

    def record_update(
        self,
        *,
        federation_id: str,
        round: int,
        client_id: str,
        receipt: bytes,
        signature: bytes,
        receipt_hash: bytes,
        update_digest: bytes,
        artifact_path: str,
        num_examples: int,
        accepted: bool,
        now_ms: int,
    ) -> tuple[UpdateRecord, bool]:
        """Record an update whose artifact is already durable. Returns (record, created).

        The same receipt again is idempotent (created=False); a different update from the
        same client in the same round is UPDATE_DUPLICATE; a receipt already recorded in
        another round is RECEIPT_REPLAYED; a round that is not open is ROUND_CLOSED.
        """
        with self._tx() as s:
            rnd = s.get(_Round, (federation_id, round))
            existing = s.scalars(
                select(_Update).where(
                    _Update.federation_id == federation_id,
                    _Update.round == round,
                    _Update.client_id == client_id,
                )
            ).first()
            if existing is not None:
                if existing.receipt_hash == receipt_hash:
                    return _update(existing), False
                raise UpdateRejected(
                    f"client {client_id!r} already submitted an update in round {round}",
                    reason=Reason.UPDATE_DUPLICATE,
                )
            replay = s.scalars(select(_Update).where(_Update.receipt_hash == receipt_hash)).first()
            if replay is not None:
                raise UpdateRejected(
                    f"receipt was already used in round {replay.round} by {replay.client_id!r}",
                    reason=Reason.RECEIPT_REPLAYED,
                )
            if rnd is None or rnd.status != RoundStatus.OPEN:
                raise UpdateRejected(f"round {round} is not open", reason=Reason.ROUND_CLOSED)
            row = _Update(
                federation_id=federation_id,
                round=round,
                client_id=client_id,
                receipt=receipt,
                signature=signature,
                receipt_hash=receipt_hash,
                update_digest=update_digest,
                artifact_path=artifact_path,
                num_examples=num_examples,
                accepted=accepted,
                received_ms=now_ms,
            )
            s.add(row)
            try:
                s.flush()
            except IntegrityError as exc:
                raise UpdateRejected(
                    "update conflicts with one already recorded", reason=Reason.UPDATE_DUPLICATE
                ) from exc
            return _update(row), True

    def updates(
        self, federation_id: str, round: int, *, accepted_only: bool = True
    ) -> list[UpdateRecord]:
        with self._tx() as s:
            query = select(_Update).where(
                _Update.federation_id == federation_id, _Update.round == round
            )
            if accepted_only:
                query = query.where(_Update.accepted.is_(True))
            return [_update(u) for u in s.scalars(query.order_by(_Update.id)).all()]

    def count_updates(self, federation_id: str, round: int) -> int:
        with self._tx() as s:
            count = s.scalar(
                select(func.count())
                .select_from(_Update)
                .where(
                    _Update.federation_id == federation_id,
                    _Update.round == round,
                    _Update.accepted.is_(True),
                )
            )
            return int(count or 0)

    # --- rejections ------------------------------------------------------------------------

    def record_rejection(
        self,
        *,
        federation_id: str,
        reason: Reason,
        message: str,
        now_ms: int,
        round: int | None = None,
        client_id: str | None = None,
    ) -> RejectionRecord:
        with self._tx() as s:
            row = _Rejection(
                federation_id=federation_id,
                round=round,
                client_id=client_id,
                reason=reason.value,
                message=message,
                created_ms=now_ms,
            )
            s.add(row)
        return RejectionRecord(
            federation_id=federation_id,
            round=round,
            client_id=client_id,
            reason=reason,
            message=message,
            created_ms=now_ms,
        )

    def rejections(self, federation_id: str) -> list[RejectionRecord]:
        with self._tx() as s:
            rows = s.scalars(
                select(_Rejection)
                .where(_Rejection.federation_id == federation_id)
                .order_by(_Rejection.id)
            ).all()
            return [
                RejectionRecord(
                    federation_id=r.federation_id,
                    round=r.round,
                    client_id=r.client_id,
                    reason=_reason(r.reason) or Reason.INTERNAL,
                    message=r.message,
                    created_ms=r.created_ms,
                )
                for r in rows
            ]


__all__ = [
    "ClientRecord",
    "FederationRecord",
    "FederationStatus",
    "NonceRecord",
    "RejectionRecord",
    "ResumePoint",
    "RoundRecord",
    "RoundStatus",
    "StateStore",
    "TpmCounters",
    "UpdateRecord",
]
