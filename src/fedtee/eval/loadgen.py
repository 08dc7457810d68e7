"""An asyncio load generator: many virtual clients in one process against one real server.

Each virtual client does what ``fedtee client start`` does, over real TLS gRPC
(``grpc.aio``) with the simulated TEE: its own identity key and its own sim platform (so its
own platform id), a challenge, evidence binding the nonce and the key
(:func:`fedtee.attest.binding.report_data`, :class:`~fedtee.attest.attesters.sim.SimAttester`),
enrolment, then GetTask / DownloadModel / SubmitUpdate with a credential and a proof of
possession on every call (:func:`fedtee.wire.auth.client_metadata`) and a receipt signed by
the TEE-bound key (:func:`fedtee.ledger.receipts.sign_receipt`). Messages go through
:mod:`fedtee.wire.serde` like everywhere else; only the I/O is asynchronous, so a thousand
clients need one thread.

"Training" returns the global model plus small deterministic noise (the framework-overhead
workload of the benchmarks): the figures measure the federation, not a learning algorithm.

A call the server sheds (UNAVAILABLE, RESOURCE_EXHAUSTED without a fedtee reason,
DEADLINE_EXCEEDED) is retried with jittered backoff and counted in ``retries``; a
``server_busy`` answer (every transfer slot taken) is asked again after the server's
retry_after hint and counted in ``busy``; anything else ends that client and is counted in
``errors`` with its reason. Nothing here reads files: the caller passes the CA, the sim root
and the code measurement as values.

Uploads go as a real client sends them (:meth:`fedtee.client.grpc_transport.GrpcTransport.
submit_update`): the header, then the data once the server has taken the upload (its initial
metadata, ``fedtee.wire.auth.UPLOAD_GO_KEY``), and afterwards a client with a connection of
its own opens a fresh one.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from fedtee import identity, tensors
from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot
from fedtee.attest.binding import report_data
from fedtee.attest.model import TeeType
from fedtee.client.grpc_transport import translate
from fedtee.client.runtime import EnrolmentRejected
from fedtee.client.transport import ServerBusy, ServerUnavailable
from fedtee.errors import FedteeError, Reason
from fedtee.ledger.receipts import Receipt, SignedReceipt, sign_receipt
from fedtee.wire import auth, serde
from fedtee.wire.limits import DEFAULT_LIMITS, WireLimits
from fedtee.wire.messages import (
    ChallengeRequest,
    EnrollRequest,
    Enrolment,
    ModelRequest,
    SubmitOutcome,
    Task,
    TaskKind,
    UpdateHeader,
)
from fedtee.wire.stubs import federation_stub

log = logging.getLogger(__name__)

_SERVICE = "/fedtee.v1.Federation/"
_SHED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    }
)
T = TypeVar("T")


class EndedMidUpload(grpc.aio.AioRpcError):  # type: ignore[misc]
    """A SubmitUpdate that grpc.aio reports as INTERNAL ("Internal error from Core"): the
    call ended while the client was still writing into it, and grpc.aio reports INTERNAL in
    place of the call's status (grpc/grpc#36066; the sync API that ``fedtee client`` uses
    reports the status). Before the server's go (:data:`fedtee.wire.auth.UPLOAD_GO_KEY`) the
    call was refused before any data was sent, typically by gRPC core at the server's limit
    of calls in flight while the header was written. After the go the cause is not known
    here; 10,000 clients on one 2-core machine met it a few times per run. Either way the
    server counts a signed receipt once, so the upload is asked again, as shed load, and
    the retry is counted by kind ("INTERNAL before the go" / "after the go") and logged."""

    def __init__(self, exc: grpc.aio.AioRpcError, *, before_go: bool) -> None:
        super().__init__(
            exc.code(),
            exc.initial_metadata(),
            exc.trailing_metadata(),
            exc.details(),
            exc.debug_error_string(),
        )
        self.before_go = before_go


@dataclass(frozen=True, kw_only=True)
class LoadTarget:
    """Where the server is and what the virtual clients need to be admitted."""

    address: str  # host:port
    ca_pem: bytes  # the federation CA that signed the server's TLS certificate
    sim_root: SimRoot  # the sim root the server trusts (certifies each virtual platform)
    measurement: bytes  # the code measurement the policy accepts (48 bytes)
    server_name: str = "localhost"
    limits: WireLimits = DEFAULT_LIMITS


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    clients: int
    id_prefix: str = "load"
    channels: int = 0  # TLS connections shared by the clients; 0: one per client
    max_rounds: int | None = None  # stop after training this many rounds (None: until FINISHED)
    call_timeout_s: float = 120.0
    max_attempts: int = 30  # per call, for calls the server sheds
    chunk_bytes: int = 1 << 20  # UpdateChunk data size, as a real client's default
    # A server_busy answer (transfer slots all taken) is asked again after the server's
    # retry_after hint, for up to this long per call, without spending max_attempts.
    max_busy_s: float = 600.0
    backoff_max_s: float = 2.0
    clock_offset_ms: int = 0  # added to this machine's clock (clock-skew experiments)
    # At most this many clients between challenge and credential at once (0: no limit). A
    # fleet's arrival is spread out; 10,000 challenges at one instant would sit in the
    # server's queue longer than a nonce lives.
    max_enrolling: int = 0
    # Cancel every other client as soon as one ends with an error: for runs whose rounds
    # need all N updates (min_clients = N), which could otherwise never finish.
    abort_on_error: bool = False
    noise: float = 1e-3
    seed: int = 0


@dataclass(kw_only=True)
class ClientResult:
    client_id: str
    enrolled: bool = False
    enrol_s: float = 0.0  # challenge to credential, retries included
    rounds_accepted: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (round, reason)
    submit_s: list[float] = field(default_factory=list)
    finished: bool = False
    error: str = ""  # "reason: message" of what ended this client early
    retries: int = 0
    # What was retried: "method CODE" (e.g. "SubmitUpdate UNAVAILABLE") -> how many times.
    retry_kinds: Counter[str] = field(default_factory=Counter)
    busy: int = 0  # server_busy answers (transfer slots taken), each asked again


@dataclass(frozen=True, kw_only=True)
class LoadReport:
    clients: int
    enrolled: int
    finished: int
    accepted_updates: int
    rejected_updates: int
    errors: int
    error_reasons: dict[str, int]
    retries: int
    retry_kinds: dict[str, int]  # "method CODE" -> retries of it, over all clients
    busy: int  # server_busy answers, each asked again after the server's hint
    enrol_wall_s: float  # from start until the last client held a credential
    wall_s: float
    enrol_latency_s: tuple[float, float]  # (median, 95th percentile)
    submit_latency_s: tuple[float, float]
    results: tuple[ClientResult, ...]

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.rejected_updates == 0 and self.enrolled == self.clients


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    ordered = np.asarray(sorted(values))
    return (float(np.percentile(ordered, 50)), float(np.percentile(ordered, 95)))


class VirtualClient:
    """One simulated-TEE client; :meth:`run` is the whole life of a client, and the steps
    (:meth:`enroll`, :meth:`task`, :meth:`download`, :meth:`train`, :meth:`submit`) are public
    so fault tests can stop between them."""

    def __init__(
        self,
        *,
        client_id: str,
        stub: Any,
        target: LoadTarget,
        options: LoadOptions,
        enrolled: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        enrolling: asyncio.Semaphore | None = None,
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.result = ClientResult(client_id=client_id)
        self._id = client_id
        self._stub = stub
        # The client's own connection (``stub``'s), replaced after each upload; None when
        # the stub's channel is shared with other clients.
        self._channel = channel
        self._target = target
        self._options = options
        self._enrolled = enrolled
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self._enrolling = enrolling  # at most this many clients enrolling at once
        self._key = identity.generate()
        self._public = identity.public_key_der(self._key)
        self._attester = SimAttester(
            platform=SimPlatform.generate(target.sim_root),
            measurement=target.measurement,
            clock=self._now_ms,
        )
        self._credential = b""

    def _now_ms(self) -> int:
        return int(time.time() * 1000) + self._options.clock_offset_ms

    def _metadata(self, method: str) -> list[tuple[str, str | bytes]]:
        return list(
            auth.client_metadata(
                method=_SERVICE + method,
                credential=self._credential,
                private_key=self._key,
                now_ms=self._now_ms(),
            )
        )

    async def _call(self, method: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """One call, retried with jittered backoff while the server sheds load."""
        busy_waited = 0.0
        n = 0
        while n < self._options.max_attempts:
            try:
                return await attempt()
            except grpc.aio.AioRpcError as exc:
                error = translate(method, exc)
                hint = error.retry_after_s if isinstance(error, ServerBusy) else None
                if hint is not None:
                    if busy_waited >= self._options.max_busy_s:
                        raise error from exc
                    self.result.busy += 1
                    delay = hint * (0.5 + self._rng.random())
                    busy_waited += delay
                    await asyncio.sleep(delay)
                    continue
                mid_upload = isinstance(exc, EndedMidUpload)
                shed = mid_upload or (
                    exc.code() in _SHED
                    and not any(k == auth.REASON_KEY for k, _ in exc.trailing_metadata() or ())
                )
                if not (shed or isinstance(error, ServerUnavailable)):
                    raise error from exc
                if n + 1 == self._options.max_attempts:
                    raise error from exc
                kind = exc.code().name
                if isinstance(exc, EndedMidUpload):
                    kind = f"INTERNAL {'before' if exc.before_go else 'after'} the go"
                    log.warning("%s: %s: %s", self._id, kind, exc.debug_error_string())
                self.result.retry_kinds[f"{method} {kind}"] += 1
            self.result.retries += 1
            delay = min(self._options.backoff_max_s, 0.05 * (1 << min(n, 6)))
            await asyncio.sleep(delay * (0.5 + self._rng.random() / 2))
            n += 1
        raise AssertionError("unreachable")  # pragma: no cover

    async def enroll(self) -> None:
        started = time.monotonic()
        timeout = self._options.call_timeout_s
        limits = self._target.limits

        async def exchange() -> Any:
            # A nonce is single use: a retried enrolment starts from a fresh challenge.
            request = serde.challenge_request_to_proto(
                ChallengeRequest(client_id=self._id, tee=TeeType.SIM)
            )
            reply = await self._stub.GetChallenge(request, timeout=timeout)
            challenge = serde.challenge_from_proto(reply, limits=limits)
            bound = report_data(nonce=challenge.nonce, public_key=self._public, size=64)
            enroll = serde.enroll_request_to_proto(
                EnrollRequest(
                    client_id=self._id,
                    nonce=challenge.nonce,
                    public_key=self._public,
                    evidence=self._attester.attest(bound),
                )
            )
            return await self._stub.Enroll(enroll, timeout=timeout)

        async def attempts() -> Enrolment:
            nonlocal started
            started = time.monotonic()  # latency from the first challenge, not the queue
            for n in range(self._options.max_attempts):
                outcome = serde.enrolment_from_proto(await self._call("Enroll", exchange))
                # A nonce that expired while the Enroll call sat in the server's queue says
                # nothing about this client: ask for a fresh one (counted as a retry).
                if outcome.accepted or outcome.reason != Reason.NONCE_EXPIRED.value:
                    return outcome
                if n + 1 < self._options.max_attempts:
                    self.result.retries += 1
                    self.result.retry_kinds["Enroll nonce_expired"] += 1
            return outcome

        if self._enrolling is None:
            outcome = await attempts()
        else:
            async with self._enrolling:
                outcome = await attempts()
        if not outcome.accepted:
            try:
                reason = Reason(outcome.reason)
            except ValueError:
                reason = Reason.INTERNAL
            raise EnrolmentRejected(f"enrolment of {self._id!r}: {outcome.message}", reason=reason)
        self._credential = outcome.credential
        self.result.enrolled = True
        self.result.enrol_s = time.monotonic() - started
        self._enrolled()

    async def task(self) -> Task:
        async def call() -> Any:
            return await self._stub.GetTask(
                serde.task_request_to_proto(client_id=self._id),
                metadata=self._metadata("GetTask"),
                timeout=self._options.call_timeout_s,
            )

        return serde.task_from_proto(await self._call("GetTask", call), limits=self._target.limits)

    async def download(self, task: Task) -> bytes:
        buf = bytearray()

        async def fetch() -> None:
            stream = self._stub.DownloadModel(
                serde.model_request_to_proto(
                    ModelRequest(round=task.round, digest=task.global_model_digest, offset=len(buf))
                ),
                metadata=self._metadata("DownloadModel"),
                timeout=self._options.call_timeout_s,
            )
            async for msg in stream:
                chunk = serde.model_chunk_from_proto(msg, limits=self._target.limits)
                if chunk.offset != len(buf) or len(buf) + len(chunk.data) > task.global_model_size:
                    raise FedteeError(f"model chunk at {chunk.offset}, expected {len(buf)}")
                buf.extend(chunk.data)

        await self._call("DownloadModel", fetch)
        data = bytes(buf)
        if tensors.digest(data) != task.global_model_digest:
            raise FedteeError("global model digest does not match the task")
        return data

    def train(self, task: Task, model: bytes) -> tuple[SignedReceipt, bytes]:
        rng = np.random.default_rng(self._rng.getrandbits(32))
        arrays = {
            name: (value + rng.normal(0, self._options.noise, value.shape)).astype(value.dtype)
            for name, value in tensors.decode(model).items()
        }
        update = tensors.encode_pure(arrays)
        receipt = Receipt(
            federation_id=task.federation_id,
            round=task.round,
            client_id=self._id,
            global_model_digest=task.global_model_digest,
            update_digest=tensors.digest(update),
            num_examples=10,
            measurement=self._target.measurement,
            created_unix_ms=self._now_ms(),
        )
        return sign_receipt(receipt, self._key), update

    async def submit(
        self,
        signed: SignedReceipt,
        update: bytes,
        *,
        chunks: AsyncIterable[bytes] | None = None,
    ) -> SubmitOutcome:
        """Send the update (as ``chunks`` when given, e.g. a stream that breaks off)."""
        step = min(self._options.chunk_bytes, self._target.limits.chunk_bytes)

        async def parts() -> AsyncIterator[bytes]:
            for i in range(0, len(update), step):
                yield update[i : i + step]

        async def send() -> Any:
            # The same signed receipt on every attempt: the server counts it once.
            call = self._stub.SubmitUpdate(
                metadata=self._metadata("SubmitUpdate"), timeout=self._options.call_timeout_s
            )
            went = False
            try:
                try:
                    await call.write(
                        serde.update_header_to_proto(UpdateHeader(receipt=signed, size=len(update)))
                    )
                    # The data only once the server has taken the upload (UPLOAD_GO_KEY); a
                    # refusal ends the call instead (its initial metadata then has no go),
                    # and awaiting the call raises the refusal.
                    went = auth.upload_go(await call.initial_metadata())
                    if went:
                        async for part in chunks if chunks is not None else parts():
                            await call.write(serde.update_data_to_wire(part))
                    await call.done_writing()
                except asyncio.InvalidStateError:
                    pass  # the call ended while writing: its status says why
                return await call
            except grpc.aio.AioRpcError as exc:
                # From a write, the wait for the go, or the call's end alike.
                if exc.code() is grpc.StatusCode.INTERNAL:
                    raise EndedMidUpload(exc, before_go=not went) from exc
                raise

        try:
            return serde.submit_outcome_from_proto(await self._call("SubmitUpdate", send))
        finally:
            await self._fresh_connection()

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def _fresh_connection(self) -> None:
        """After an upload, as a real client does (GrpcTransport.submit_update): a client
        with a connection of its own drops it and opens another."""
        if self._channel is None:
            return
        old = self._channel
        self._channel = channel(self._target)
        self._stub = stub(self._channel)
        await old.close()

    async def run(self) -> None:
        await self.enroll()
        trained = 0
        while True:
            task = await self.task()
            if task.kind is TaskKind.FINISHED:
                self.result.finished = True
                return
            if task.kind is TaskKind.REATTEST:
                await self.enroll()
                continue
            if task.kind is TaskKind.WAIT:
                await asyncio.sleep(task.retry_after_ms / 1000 * (0.5 + self._rng.random()))
                continue
            model = await self.download(task)
            signed, update = self.train(task, model)
            started = time.monotonic()
            outcome = await self.submit(signed, update)
            self.result.submit_s.append(time.monotonic() - started)
            if outcome.accepted:
                self.result.rounds_accepted.append(task.round)
            else:
                self.result.rejected.append((task.round, outcome.reason))
            trained += 1
            if self._options.max_rounds is not None and trained >= self._options.max_rounds:
                self.result.finished = True
                return


def channel(target: LoadTarget) -> grpc.aio.Channel:
    """A TLS channel of its own (one connection) to the target."""
    options: list[tuple[str, Any]] = list(target.limits.grpc_options())
    options.append(("grpc.ssl_target_name_override", target.server_name))
    # Separate connections even to one address (otherwise gRPC may share one subchannel).
    options.append(("grpc.use_local_subchannel_pool", 1))
    credentials = grpc.ssl_channel_credentials(root_certificates=target.ca_pem)
    return grpc.aio.secure_channel(target.address, credentials, options=options)


async def run_load(
    target: LoadTarget,
    options: LoadOptions,
    *,
    on_enrolled: Callable[[int], None] | None = None,
) -> LoadReport:
    """Run ``options.clients`` virtual clients to the end of the federation (or
    ``max_rounds``) and report what happened to each."""
    if options.clients < 1:
        raise ValueError("clients must be at least 1")
    count = options.clients
    n_channels = count if options.channels <= 0 else min(options.channels, count)
    channels = [channel(target) for _ in range(n_channels)]
    stubs = [stub(ch) for ch in channels]
    started = time.monotonic()
    enrolled_at: list[float] = []

    def enrolled() -> None:
        enrolled_at.append(time.monotonic() - started)
        if on_enrolled is not None:
            on_enrolled(len(enrolled_at))

    width = len(str(count - 1))
    enrolling = asyncio.Semaphore(options.max_enrolling) if options.max_enrolling > 0 else None
    clients = [
        VirtualClient(
            client_id=f"{options.id_prefix}-{i:0{width}d}",
            stub=stubs[i % n_channels],
            target=target,
            options=options,
            enrolled=enrolled,
            rng=random.Random(options.seed * 1_000_003 + i),  # noqa: S311 - jitter, not secrets
            enrolling=enrolling,
            channel=channels[i] if n_channels == count else None,
        )
        for i in range(count)
    ]

    started = time.monotonic()  # keys and platforms made: the load starts now

    aborted = asyncio.Event()

    async def guarded(client: VirtualClient) -> None:
        try:
            await client.run()
        except FedteeError as exc:
            client.result.error = f"{exc.reason.value}: {exc.message}"
        except Exception as exc:  # a bug or an unexpected failure: count it, keep the others
            client.result.error = f"internal: {type(exc).__name__}: {exc}"
        if client.result.error:
            # Said at once: a run of thousands of clients can go on for a long time after.
            log.warning("%s stopped: %s", client.result.client_id, client.result.error)
            if options.abort_on_error:
                aborted.set()

    async def everyone() -> None:
        await asyncio.gather(*(guarded(c) for c in clients))

    try:
        work = asyncio.ensure_future(everyone())
        stop = asyncio.ensure_future(aborted.wait())
        await asyncio.wait((work, stop), return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not work.done():
            log.warning("a client failed: cancelling the other %d (abort_on_error)", count)
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
    finally:
        if n_channels == count:  # each client's own, maybe replaced since
            await asyncio.gather(*(c.close() for c in clients))
        else:
            await asyncio.gather(*(ch.close() for ch in channels))
    wall = time.monotonic() - started
    results = tuple(c.result for c in clients)
    reasons = Counter(r.error.split(":", 1)[0] for r in results if r.error)
    return LoadReport(
        clients=count,
        enrolled=sum(r.enrolled for r in results),
        finished=sum(r.finished for r in results),
        accepted_updates=sum(len(r.rounds_accepted) for r in results),
        rejected_updates=sum(len(r.rejected) for r in results),
        errors=sum(1 for r in results if r.error),
        error_reasons=dict(reasons),
        retries=sum(r.retries for r in results),
        retry_kinds=dict(sum((r.retry_kinds for r in results), Counter())),
        busy=sum(r.busy for r in results),
        enrol_wall_s=max(enrolled_at, default=0.0),
        wall_s=wall,
        enrol_latency_s=_percentiles([r.enrol_s for r in results if r.enrolled]),
        submit_latency_s=_percentiles([s for r in results for s in r.submit_s]),
        results=results,
    )


def stub(chan: grpc.aio.Channel) -> Any:
    """The fedtee.v1 Federation stub over ``chan``."""
    return federation_stub(chan)


__all__ = [
    "ClientResult",
    "LoadOptions",
    "LoadReport",
    "LoadTarget",
    "VirtualClient",
    "channel",
    "run_load",
    "stub",
]
