"""The client runtime: attest, enrol, then train rounds and send signed updates.

One client's life (DESIGN.md "Trust flow"):

0. **Server check** (mutual attestation, when configured): ``server_check`` verifies the
   aggregator's evidence (:mod:`fedtee.client.server_attestation`) before every enrolment;
   a server that fails is refused, so it never sees this client's evidence or updates.
1. **Key.** A fresh ECDSA P-256 identity key. With the sim TEE it lives in this process;
   with hardware it would live inside the TEE, next to the training code.
2. **Challenge.** ``GetChallenge`` (with the attester's ``challenge_request()`` aux when it
   has one, e.g. a TPM's EK certificate and AK; the answer's aux goes to ``activate``).
3. **Evidence.** ``report_data = binding.report_data(nonce, public key)`` at the attester's
   size; the attester returns evidence over it.
4. **Enrol.** ``Enroll`` -> a credential bound to the key, or a rejection with a stable
   reason (raised as :class:`EnrolmentRejected`; the client does not retry a rejection).
5. **Loop** on ``GetTask``: TRAIN -> download the global model (bounded chunks, resumed from
   the last offset after a dropped stream, SHA-256 checked against the task) -> ``fit`` (or
   ``fit_in_place`` on the downloaded buffer itself, for a trainer that offers it) ->
   safetensors update -> receipt signed with the identity key -> ``SubmitUpdate``; WAIT ->
   sleep as told (capped); REATTEST or an expiring credential -> enrol again; FINISHED -> stop.

Network trouble (:class:`~fedtee.client.transport.ServerUnavailable`) is retried with
exponential backoff and jitter; after ``max_reconnect_attempts`` failures in a row the runtime
gives up with that error. Nothing here cheats: the demo's cheating clients wrap the transport
or the trainer in :mod:`fedtee.client.cheats`.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedtee import codec, identity, tensors
from fedtee.attest.attesters.measure import measure_code
from fedtee.attest.binding import report_data
from fedtee.attest.model import Attester, TeeType
from fedtee.client.trainer import FitResult, InPlaceTrainer, Trainer, TrainerSpec
from fedtee.client.transport import (
    Enrolment,
    ServerBusy,
    ServerUnavailable,
    Session,
    SubmitOutcome,
    Task,
    TaskKind,
    Transport,
)
from fedtee.errors import AttestationError, ConfigError, CredentialError, ProtocolError, Reason
from fedtee.ledger.receipts import Receipt, SignedReceipt, receipt_hash, sign_receipt
from fedtee.wire.limits import DEFAULT_LIMITS

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from fedtee.attest.result import AttestationResult

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = DEFAULT_LIMITS.chunk_bytes  # what a server reads per UpdateChunk
DEFAULT_MAX_MODEL_BYTES = 1 << 30


def measure_trainer(spec: TrainerSpec) -> bytes:
    """The code measurement of a trainer: its module file plus which factory runs.

    The client's data partition is deliberately not measured: it is data, not code, and
    every honest client of a federation must share one reference measurement.
    """
    return measure_code([spec.module_file()], config=f"trainer={spec.target}\n".encode())


class EnrolmentRejected(AttestationError):
    """The server appraised this client's evidence and said no (reason from the server)."""


def _reason(code: str, fallback: Reason) -> Reason:
    try:
        return Reason(code)
    except ValueError:
        return fallback


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    max_model_bytes: int = DEFAULT_MAX_MODEL_BYTES
    max_reconnect_attempts: int = 8
    # A server shedding load (ServerBusy) is asked again, after its retry_after hint (capped
    # at max_wait_s) or with backoff, until this many seconds of waiting; those answers do
    # not count against max_reconnect_attempts.
    max_busy_s: float = 600.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    max_wait_s: float = 5.0  # cap on a server's retry_after: a confused server cannot park us
    reenrol_margin_ms: int = 5_000  # re-attest this long before the credential expires
    max_rounds: int | None = None  # stop after training this many rounds (tests, demos)
    encoding: codec.Encoding = codec.Encoding.SAFETENSORS  # update compression (fedtee.codec)
    topk_fraction: float = codec.DEFAULT_TOPK_FRACTION  # share of each tensor top-k sends

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_bytes <= MAX_CHUNK_BYTES:
            raise ConfigError(
                f"chunk_bytes must be 1..{MAX_CHUNK_BYTES} (the server's per-chunk limit)"
            )
        if self.max_reconnect_attempts < 1:
            raise ValueError("max_reconnect_attempts must be >= 1")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ConfigError("topk_fraction must be in (0, 1]")


@dataclass(frozen=True, kw_only=True)
class ClientEvent:
    """Something a user may want to see: enrolled, trained, accepted, rejected, waiting..."""

    kind: str
    round: int = 0
    reason: str = ""
    detail: str = ""


@dataclass(kw_only=True)
class RunSummary:
    enrolments: int = 0
    rounds_trained: int = 0
    accepted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (round, reason)
    finished: bool = False


class ClientRuntime:
    """Drives one client against a :class:`~fedtee.client.transport.Transport`."""

    def __init__(
        self,
        *,
        client_id: str,
        transport: Transport,
        attester: Attester,
        trainer: Trainer,
        measurement: bytes,
        options: RuntimeOptions | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        on_event: Callable[[ClientEvent], None] | None = None,
        rng: random.Random | None = None,
        server_check: Callable[[], AttestationResult | None] | None = None,
    ) -> None:
        self.client_id = client_id
        self.transport = transport
        self.attester = attester
        self.trainer = trainer
        self.measurement = measurement
        self.options = options or RuntimeOptions()
        self._sleep = sleep
        self._clock_ms = clock_ms
        self._on_event = on_event
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._server_check = server_check
        self._code_identity = measurement
        self.summary = RunSummary()
        # The last round's model buffer, reused by the next download when nothing else holds
        # it any more (see download).
        self._model_buffer: NDArray[np.uint8] | None = None
        self.bytes_sent = 0  # update bytes handed to the transport by the last submit()

    # --- plumbing -------------------------------------------------------------------------

    def _emit(self, kind: str, *, round: int = 0, reason: str = "", detail: str = "") -> None:
        if self._on_event is not None:
            self._on_event(ClientEvent(kind=kind, round=round, reason=reason, detail=detail))

    def _backoff(self, attempt: int) -> float:
        base = min(self.options.backoff_max_s, self.options.backoff_initial_s * float(1 << attempt))
        return base * (0.5 + self._rng.random() / 2)  # jitter so clients do not stampede

    def _retry(self, what: str, call: Callable[[], Any]) -> Any:
        attempt = 0  # network failures in a row
        busy = 0  # load-shedding answers in a row
        busy_waited = 0.0
        while True:
            try:
                return call()
            except ServerBusy as exc:
                if busy_waited >= self.options.max_busy_s:
                    raise ServerBusy(
                        f"{what}: server still busy after {busy_waited:.0f}s of retries: "
                        f"{exc.message}"
                    ) from exc
                if exc.retry_after_s is not None:  # the server's estimate of the wait
                    hint = min(exc.retry_after_s, self.options.max_wait_s)
                    delay = hint * (0.5 + self._rng.random())
                else:
                    delay = self._backoff(min(busy, 16))
                busy += 1
                busy_waited += delay
                detail = exc.message
            except ServerUnavailable as exc:
                attempt += 1
                if attempt == self.options.max_reconnect_attempts:
                    raise ServerUnavailable(
                        f"{what}: gave up after {attempt} attempts: {exc.message}"
                    ) from exc
                delay = self._backoff(attempt - 1)
                detail = exc.message
            self._emit("reconnecting", detail=f"{what}: {detail}; retry in {delay:.1f}s")
            self._sleep(delay)

    # --- enrolment --------------------------------------------------------------------------

    def check_server(self) -> None:
        """Step 0: mutual attestation; raises (an AttestationError) for a refused server."""
        if self._server_check is None:
            return
        try:
            result: AttestationResult | None = self._retry("server attestation", self._server_check)
        except AttestationError as exc:
            self._emit("server_refused", reason=exc.reason.value, detail=exc.message)
            raise
        if result is None:
            self._emit("server_unattested", detail="the server has no TEE; not required")
            return
        tee = result.tee.value if result.tee is not None else "?"
        backed = "" if result.hardware_backed else ", SIMULATED, not hardware-backed"
        self._emit("server_attested", detail=f"{tee} TEE{backed}; {result.status.value}")

    def enroll(self) -> Session:
        """Steps 0-4: check the server, then a fresh key, a challenge, evidence over
        (nonce, key), a credential."""
        self.check_server()
        key = identity.generate()
        public = identity.public_key_der(key)
        request_aux: Mapping[str, bytes] = {}
        challenge_request = getattr(self.attester, "challenge_request", None)
        if callable(challenge_request):
            request_aux = challenge_request()

        def exchange() -> Enrolment:
            # One attempt is challenge -> evidence -> Enroll. A nonce is single use, so after
            # a dropped Enroll the whole exchange is redone with a fresh challenge.
            challenge = self.transport.get_challenge(
                client_id=self.client_id, tee=self.attester.tee, aux=request_aux
            )
            activate = getattr(self.attester, "activate", None)
            if challenge.aux and callable(activate):
                activate(challenge.aux)
            bound = report_data(
                nonce=challenge.nonce, public_key=public, size=self.attester.report_data_size
            )
            return self.transport.enroll(
                client_id=self.client_id,
                nonce=challenge.nonce,
                public_key=public,
                evidence=self.attester.attest(bound),
            )

        result: Enrolment = self._retry("enrolment", exchange)
        if not result.accepted:
            reason = _reason(result.reason, Reason.INTERNAL)
            self._emit("enrol_rejected", reason=reason.value, detail=result.message)
            raise EnrolmentRejected(
                f"server rejected enrolment of {self.client_id!r}: {result.message}",
                reason=reason,
            )
        self._code_identity = _code_identity(result.attestation_result_json, self.measurement)
        self.summary.enrolments += 1
        backing = (
            "SIMULATED TEE, not hardware-backed"
            if self.attester.tee is TeeType.SIM
            else f"{self.attester.tee.value} TEE"
        )
        self._emit(
            "enrolled",
            detail=f"{backing}; credential until {result.credential_expires_unix_ms}",
        )
        return Session(
            client_id=self.client_id,
            credential=result.credential,
            private_key=key,
            expires_unix_ms=result.credential_expires_unix_ms,
        )

    # --- one round ----------------------------------------------------------------------------

    def download(self, session: Session, task: Task) -> memoryview:
        """The round's global model, resumed from the last good offset, digest checked.

        The bytes land in one writable buffer of the declared size (bounded first), hashed as
        they arrive: a model costs one model of memory, not the two or three of growing a
        buffer, copying it out and hashing again. The buffer is a numpy allocation, which
        numpy backs with transparent huge pages where the kernel offers them (first touch of
        a 40 MB ``bytearray`` took ~20,000 page faults and ~0.1 s per round here; the same
        buffer from numpy, ~600 faults).

        When the last round trained in place (the update lived in that buffer, so it was
        held through the upload anyway), its buffer is reused if nothing holds it any more:
        no view of it is left (a trainer that kept one keeps a reference to it, so its
        reference count says so). That spares the kernel zeroing a fresh model's pages every
        round (about 5 ms per 40 MB here, more when the cores are busy). A trainer that kept
        views of last round's model gets a fresh buffer and still sees last round's bytes.
        Between rounds such a client so holds one model's memory."""
        size = task.global_model_size
        if size > self.options.max_model_bytes:
            raise ProtocolError(
                f"global model of {size} bytes exceeds this client's limit of "
                f"{self.options.max_model_bytes}",
                reason=Reason.MESSAGE_TOO_LARGE,
            )
        spare, self._model_buffer = self._model_buffer, None
        # References: ``spare`` and getrefcount's argument; any view of it adds one.
        if spare is None or spare.size != size or sys.getrefcount(spare) > 2:
            spare = np.empty(size, dtype=np.uint8)
        self._model_buffer = spare
        buf = spare.data  # a writable memoryview, format "B"
        del spare
        hashed = tensors.StreamingDigest()  # hashed.size: bytes received and checked so far

        def fetch() -> None:
            stream: Iterator[Any] = self.transport.download_model(
                session=session,
                round=task.round,
                digest=task.global_model_digest,
                offset=hashed.size,
            )
            for chunk in stream:
                have = hashed.size
                if chunk.offset != have or chunk.total_size != size:
                    raise ProtocolError(
                        f"model chunk at offset {chunk.offset} of {chunk.total_size} bytes; "
                        f"expected offset {have} of {size}",
                        reason=Reason.MESSAGE_MALFORMED,
                    )
                if have + len(chunk.data) > size:
                    raise ProtocolError(
                        f"model stream runs past its declared {size} bytes",
                        reason=Reason.MESSAGE_TOO_LARGE,
                    )
                buf[have : have + len(chunk.data)] = chunk.data
                hashed.update(chunk.data)
            if hashed.size != size:
                # A stream that ends early is a dropped connection: resume from here.
                raise ServerUnavailable(f"model stream ended at {hashed.size} of {size} bytes")

        self._retry("DownloadModel", fetch)
        found = hashed.digest()
        if found != task.global_model_digest:
            raise ProtocolError(
                f"global model digest {found.hex()} is not the task's "
                f"{task.global_model_digest.hex()}",
                reason=Reason.MODEL_DIGEST_MISMATCH,
            )
        return buf

    def make_update(
        self, session: Session, task: Task, model: bytes | bytearray | memoryview
    ) -> tuple[SignedReceipt, tensors.EncodedArrays]:
        """Train on the global model; return the signed receipt and the update's bytes
        (encoded as ``options.encoding``: the digest and receipt cover exactly these bytes).

        An :class:`~fedtee.client.trainer.InPlaceTrainer` trains the received model's own
        memory when the update is plain safetensors and ``model`` is writable (what
        :meth:`download` returns): one model-sized buffer for the whole round. Otherwise the
        trainer's ``fit`` gets read-only views of the received model (it must not change
        them, and cannot). A plain safetensors update is never joined into one buffer: its
        digest is a streaming first pass over the header and the tensors' own memory, and
        :meth:`submit` sends from the same memory (the receipt, which must precede the data,
        names the digest before the first byte leaves)."""
        view = memoryview(model)
        config = dict(task.config)
        result: FitResult
        if (
            self.options.encoding is codec.Encoding.SAFETENSORS
            and not view.readonly
            and isinstance(self.trainer, InPlaceTrainer)
        ):
            # The global model is not needed after this (its digest is in the task), so the
            # trainer may overwrite it; nothing below reads it again.
            arrays = tensors.decode(view, copy=False)
            result = self.trainer.fit_in_place(arrays, config)
        else:
            # The update is not in the received model's buffer: keep none for the next
            # round, so that the buffer is freed before the upload (train_round).
            self._model_buffer = None
            arrays = tensors.decode(view.toreadonly(), copy=False)
            result = self.trainer.fit(arrays, config)
        self._emit("trained", round=task.round)
        update: tensors.EncodedArrays
        if self.options.encoding is codec.Encoding.SAFETENSORS:
            update = tensors.encode_stream(result.arrays)
        else:
            # numpy + json only (no safetensors on clients); deltas against the views of
            # the received model, which the trainer cannot have changed.
            update = tensors.EncodedArrays.of_bytes(
                codec.encode_update(
                    result.arrays,
                    global_arrays=arrays,
                    encoding=self.options.encoding,
                    topk_fraction=self.options.topk_fraction,
                )
            )
        receipt = Receipt(
            federation_id=task.federation_id,
            round=task.round,
            client_id=self.client_id,
            global_model_digest=task.global_model_digest,
            update_digest=update.digest(),
            num_examples=result.num_examples,
            measurement=self._code_identity,
            metrics=dict(result.metrics),
            created_unix_ms=self._clock_ms(),
        )
        return sign_receipt(receipt, session.private_key), update

    def submit(
        self, session: Session, signed: SignedReceipt, update: tensors.EncodedArrays
    ) -> SubmitOutcome:
        """Send the update; after a dropped stream, ask the server what arrived and send
        only the rest (``GetUploadStatus``; the server keeps partial uploads for a while)."""
        step = self.options.chunk_bytes
        key = receipt_hash(signed)
        interrupted = False
        self.bytes_sent = 0

        def chunks(offset: int) -> Iterator[bytes | memoryview]:
            for chunk in update.chunks(step, offset=offset):
                self.bytes_sent += len(chunk)
                yield chunk

        def send_from(offset: int) -> SubmitOutcome:
            outcome: SubmitOutcome = self.transport.submit_update(
                session=session,
                receipt=signed,
                size=update.size,
                chunks=chunks(offset),
                encoding=self.options.encoding.value,
                offset=offset,
            )
            return outcome

        def send() -> SubmitOutcome:
            nonlocal interrupted
            offset = 0
            if interrupted:
                status = self.transport.upload_status(session=session, receipt_hash=key)
                if status.size == update.size and status.committed < update.size:
                    offset = status.committed
            interrupted = True  # if this attempt breaks off, the next one asks first
            outcome = send_from(offset)
            if offset and outcome.reason == Reason.UPLOAD_OFFSET_MISMATCH.value:
                outcome = send_from(0)  # the partial upload expired in between
            return outcome

        # Safe to resend after a dropped stream: the server treats one receipt idempotently.
        outcome: SubmitOutcome = self._retry("SubmitUpdate", send)
        if interrupted and self.bytes_sent > update.size:
            self._emit("upload_resumed", detail=f"{self.bytes_sent} bytes sent for {update.size}")
        return outcome

    def train_round(self, session: Session, task: Task) -> SubmitOutcome:
        self._emit("training", round=task.round)
        model = self.download(session, task)
        signed, update = self.make_update(session, task, model)
        # Unless the update lives in it (trained in place) or the trainer kept views of it,
        # the global model's buffer is freed here, before the upload.
        del model
        self._emit("uploading", round=task.round, detail=f"{update.size} bytes")
        outcome = self.submit(session, signed, update)
        self.summary.rounds_trained += 1
        if outcome.accepted:
            self.summary.accepted += 1
            self._emit("update_accepted", round=task.round)
        else:
            self.summary.rejected.append((task.round, outcome.reason))
            self._emit(
                "update_rejected", round=task.round, reason=outcome.reason, detail=outcome.message
            )
        return outcome

    # --- the loop -------------------------------------------------------------------------------

    def _get_task(self, session: Session) -> Task:
        task: Task = self._retry("GetTask", lambda: self.transport.get_task(session=session))
        return task

    def _renew_at(self, session: Session) -> int:
        """When to re-attest proactively: ``reenrol_margin_ms`` before expiry, but never in
        the first half of the credential's life (a short TTL must not cause an enrol loop)."""
        now = self._clock_ms()
        left = max(0, session.expires_unix_ms - now)
        return session.expires_unix_ms - min(self.options.reenrol_margin_ms, left // 2)

    def run(self) -> RunSummary:
        session = self.enroll()
        renew_at = self._renew_at(session)
        expired_in_a_row = 0
        while True:
            if self._clock_ms() >= renew_at:
                self._emit("reattesting", detail="credential about to expire")
                session = self.enroll()
                renew_at = self._renew_at(session)
            try:
                task = self._get_task(session)
                if task.kind is TaskKind.FINISHED:
                    self.summary.finished = True
                    self._emit("finished")
                    return self.summary
                if task.kind is TaskKind.REATTEST:
                    self._emit("reattesting", detail="server asked")
                    session = self.enroll()
                    renew_at = self._renew_at(session)
                    continue
                if task.kind is TaskKind.WAIT:
                    self._sleep(min(task.retry_after_ms / 1000.0, self.options.max_wait_s))
                    continue
                self.train_round(session, task)
                expired_in_a_row = 0
            except CredentialError as exc:
                # An expired credential means "attest again"; anything else about the
                # credential (forged, wrong client) is not fixed by retrying.
                expired_in_a_row += 1
                if exc.reason is not Reason.CREDENTIAL_EXPIRED or expired_in_a_row > 3:
                    raise
                self._emit("reattesting", reason=exc.reason.value, detail=exc.message)
                session = self.enroll()
                renew_at = self._renew_at(session)
                continue
            limit = self.options.max_rounds
            if limit is not None and self.summary.rounds_trained >= limit:
                return self.summary


def _code_identity(result_json: str, fallback: bytes) -> bytes:
    """The code identity the server verified (what receipts must repeat), else our own."""
    if not result_json:
        return fallback
    try:
        value = json.loads(result_json).get("code_identity")
        return bytes.fromhex(value) if isinstance(value, str) and value else fallback
    except (ValueError, AttributeError, RecursionError):
        return fallback


__all__ = [
    "ClientEvent",
    "ClientRuntime",
    "EnrolmentRejected",
    "RunSummary",
    "RuntimeOptions",
    "measure_trainer",
]
