"""Transfer slots: at most ``capacity`` model transfers (downloads and uploads) at once.

Each transfer in flight holds buffers on the server: chunks on their way through TLS,
HTTP/2 and protobuf, the connection's read buffers, a worker thread. With one transfer per
client at a time the server's peak memory grows with the number of clients; with a fixed
number of slots it grows with the number of slots.

A transfer that finds every slot taken first waits on the server, in arrival order, for at
most ``wait_s`` (a queue of at most ``max_waiting`` transfers): a waiting transfer holds a
worker thread and its stream's flow-control window (64 KiB), nothing of its data is read, and
it starts the moment a slot frees, with no round trip. Past the wait, or with the queue full,
it is refused, still before the server reads any of it, with ``server_busy`` and a hint of
when to ask again (``retry_after_ms``); the client waits about that long and asks again. It
loses nothing: a refused download has sent no bytes, and of a refused upload the server has
read only its header (the client sends its data after the server's go, auth.UPLOAD_GO_KEY,
and resumes from what the server holds, which is nothing new).

The hint is the expected wait: the recent mean transfer time times the number of clients
waiting per slot (clients refused within the last few hints), so the waiting clients together
ask about as often as slots free up, however many of them there are.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fedtee.errors import ProtocolError, Reason

# The server's default (``[server] max_transfers``; 0: unlimited). Measured with 100 load-
# generator clients at a 3.8 MiB model and 1 MiB upload chunks (bench_server_memory, 16:17
# UTC), 8 slots held the server's peak at 183 MiB against 284 MiB unlimited, rounds 8.0 s
# against 6.1 s; at 10,000,000 parameters with 10 clients (bench_flower) 4.63 s per round
# against 5.28 s without slots.
DEFAULT_MAX_TRANSFERS = 8
MAX_TRANSFERS = 4096
# How long a transfer waits on the server for a slot before it is refused (``[server]
# transfer_wait_s``; an upload never past its round's deadline).
DEFAULT_TRANSFER_WAIT_S = 60.0
MAX_TRANSFER_WAIT_S = 600.0
# A transfer holding a slot that moves no chunk for this long is cut off (``[server]
# transfer_idle_s``): 8 clients that stop reading or sending must not hold every slot until
# the round's deadline. Generous for slow links: a 256 KiB chunk at 5 KB/s takes 52 s.
DEFAULT_TRANSFER_IDLE_S = 120.0
MAX_TRANSFER_IDLE_S = 3600.0
# Worker threads a full wait queue leaves free for calls that are not transfers.
RESERVED_WORKERS = 4
# A transfer of at most this many bytes takes no slot: it holds about its own size in
# flight, and the server's worker threads bound how many run at once. With every transfer
# taking a slot, 1,000 load-generator clients at a 2.6 KB model waited out server_busy hints
# behind 8 slots (bench_load: rounds 30 s against 20 s).
SLOT_FREE_BYTES = 64 * 1024
# Data bytes in one ModelChunk the server sends ([server] send_chunk_bytes: this default, at
# least the minimum, at most what a client accepts in one chunk); see ServerConfig.
DEFAULT_SEND_CHUNK_BYTES = 512 * 1024
MIN_SEND_CHUNK_BYTES = 16 * 1024
# Bounds of the retry_after hint, in milliseconds.
MIN_RETRY_MS = 50
MAX_RETRY_MS = 10_000
# The mean transfer time starts here and follows the last transfers (exponential average).
INITIAL_TRANSFER_S = 0.5
_SMOOTHING = 0.2
# A refused client counts as waiting for this many hints after its refusal.
_WAITING_HINTS = 3


class ServerBusyError(ProtocolError):
    """Every transfer slot is taken: ask again after ``retry_after_ms`` (load shedding, not a
    refusal of the client: never recorded in the store or the ledger)."""

    default_reason = Reason.SERVER_BUSY

    def __init__(self, message: str, *, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class Lease:
    """One slot, held until :meth:`release` (idempotent: safe from both a ``finally`` and an
    RPC-termination callback). :meth:`free` is a lease that holds no slot.

    The transfer calls :meth:`touch` each time it moves a chunk; one that has not for
    longer than the server's idle limit (``TransferSlots.expire_idle``) has its
    :meth:`watch` callback run once, which cuts the transfer off: a client that stops
    reading or sending must not keep its slot from the others."""

    def __init__(self, slots: TransferSlots | None, who: str) -> None:
        self._slots = slots
        self.who = who
        self._started = slots.clock() if slots is not None else 0.0
        self._last = self._started
        self._on_idle: Callable[[], object] | None = None
        self._expired = False
        self._released = False
        self._lock = threading.Lock()

    @classmethod
    def free(cls) -> Lease:
        return cls(None, "")

    def watch(self, on_idle: Callable[[], object]) -> None:
        """Run ``on_idle`` (e.g. cancel the RPC) if the transfer goes idle."""
        self._on_idle = on_idle

    def touch(self) -> None:
        if self._slots is not None:
            self._last = self._slots.clock()

    def idle_s(self, now: float) -> float:
        return now - self._last

    def _expire(self) -> bool:
        """Cut off, once (True then); the transfer's own finally (or termination callback)
        releases the slot."""
        with self._lock:
            if self._expired or self._released:
                return False
            self._expired = True
        if self._on_idle is not None:
            self._on_idle()
        return True

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        if self._slots is not None:
            self._slots._release(self, self._slots.clock() - self._started)


class _Waiter:
    __slots__ = ("granted", "who", "woken")

    def __init__(self, who: str) -> None:
        self.who = who
        self.granted = False
        self.woken = threading.Event()


class TransferSlots:
    """Thread-safe. ``capacity`` 0 means unlimited (every acquire succeeds). A transfer that
    finds no free slot waits in a first-come queue of at most ``max_waiting`` for at most the
    ``wait_s`` it is given, then is refused with a hint."""

    def __init__(
        self,
        capacity: int,
        *,
        max_waiting: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0 (0: unlimited)")
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.capacity = capacity
        self.max_waiting = max_waiting
        self.clock = clock
        self._lock = threading.Lock()
        self._in_use = 0
        self._mean_s = INITIAL_TRANSFER_S
        self._waiting: dict[str, float] = {}  # client id -> when it was last refused
        self._holders: set[str] = set()  # a client holds at most one slot
        self._queue: deque[_Waiter] = deque()  # transfers waiting here, first come first
        self._leases: set[Lease] = set()  # the slots' holders, for expire_idle
        self._ended = 0

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use

    @property
    def ended(self) -> int:
        """How many transfers have ended (released their slot) since the slots were made."""
        with self._lock:
            return self._ended

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._queue)

    def acquire(self, who: str, *, wait_s: float = 0.0) -> Lease:
        """A slot for ``who``'s transfer, waiting for one at most ``wait_s`` seconds in the
        queue (when it has room), or ServerBusyError with a retry_after hint."""
        now = self.clock()
        with self._lock:
            if self.capacity == 0:
                self._in_use += 1
                return self._lease_locked(who)
            # A client that already holds a slot or waits for one (e.g. its earlier stream,
            # dropped on its side, not yet ended here) is refused: one client cannot take
            # every slot, nor queue behind itself.
            eligible = who not in self._holders and all(w.who != who for w in self._queue)
            if eligible and self._in_use < self.capacity and not self._queue:
                self._in_use += 1
                self._holders.add(who)
                self._waiting.pop(who, None)
                return self._lease_locked(who)
            if not (eligible and wait_s > 0 and len(self._queue) < self.max_waiting):
                raise self._busy_locked(who, now)
            waiter = _Waiter(who)
            self._queue.append(waiter)
        waiter.woken.wait(wait_s)  # outside the lock
        with self._lock:
            if waiter.granted:  # possibly just as the wait ran out: the slot is ours
                self._waiting.pop(who, None)
                return self._lease_locked(who)
            self._queue.remove(waiter)
            raise self._busy_locked(who, self.clock())

    def _lease_locked(self, who: str) -> Lease:
        lease = Lease(self, who)
        self._leases.add(lease)
        return lease

    def expire_idle(self, idle_s: float) -> list[str]:
        """Cut off every transfer that has moved no chunk for more than ``idle_s`` seconds
        (each once); returns the clients whose transfers were cut."""
        now = self.clock()
        with self._lock:
            idle = [lease for lease in self._leases if lease.idle_s(now) > idle_s]
        return [lease.who for lease in idle if lease._expire()]

    def _busy_locked(self, who: str, now: float) -> ServerBusyError:
        """The refusal of ``who``, counted as waiting, with the hint."""
        self._waiting[who] = now
        hint = self._hint_locked(now)
        return ServerBusyError(
            f"all {self.capacity} transfer slots are in use (or one is this client's); "
            f"ask again in about {hint} ms",
            retry_after_ms=hint,
        )

    def _hint_locked(self, now: float) -> int:
        horizon = (
            _WAITING_HINTS
            * max(self._mean_s, MIN_RETRY_MS / 1000)
            * (1 + len(self._waiting) / max(self.capacity, 1))
        )
        stale = [who for who, when in self._waiting.items() if now - when > horizon]
        for who in stale:
            del self._waiting[who]
        per_slot = len(self._waiting) / max(self.capacity, 1)
        ms = int(self._mean_s * 1000 * max(per_slot, 1.0))
        return max(MIN_RETRY_MS, min(MAX_RETRY_MS, ms))

    def _release(self, lease: Lease, held_s: float) -> None:
        with self._lock:
            self._ended += 1
            self._leases.discard(lease)
            self._holders.discard(lease.who)
            self._mean_s += _SMOOTHING * (max(held_s, 0.0) - self._mean_s)
            if self.capacity == 0:
                self._in_use -= 1
                return
            # Handed straight to the first waiter (in_use stays): no round trip, no race with
            # a newcomer. A waiter's client holds no slot (acquire queues no such client).
            if self._queue:
                waiter = self._queue.popleft()
                waiter.granted = True
                self._holders.add(waiter.who)
                waiter.woken.set()
                return
            self._in_use -= 1


__all__ = [
    "DEFAULT_MAX_TRANSFERS",
    "DEFAULT_TRANSFER_IDLE_S",
    "DEFAULT_TRANSFER_WAIT_S",
    "MAX_TRANSFERS",
    "MAX_TRANSFER_IDLE_S",
    "MAX_TRANSFER_WAIT_S",
    "RESERVED_WORKERS",
    "SLOT_FREE_BYTES",
    "Lease",
    "ServerBusyError",
    "TransferSlots",
]
