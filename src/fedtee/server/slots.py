"""Transfer slots: at most ``capacity`` model transfers (downloads and uploads) at once.

Each transfer in flight holds buffers on the server: chunks on their way through TLS,
HTTP/2 and protobuf, the connection's read buffers, a worker thread. With one transfer per
client at a time the server's peak memory grows with the number of clients; with a fixed
number of slots it grows with the number of slots. A transfer that finds every slot taken is
refused at once, before the server reads any of it, with ``server_busy`` and a hint of when
to ask again (``retry_after_ms``); the client waits about that long and asks again. It loses
nothing: a refused download has sent no bytes, and a refused upload is refused before its
header is read (the client resumes from what the server holds, which is nothing new).

The hint is the expected wait: the recent mean transfer time times the number of clients
waiting per slot (clients refused within the last few hints), so the waiting clients together
ask about as often as slots free up, however many of them there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from fedtee.errors import ProtocolError, Reason

# The server's default (``[server] max_transfers``): unlimited. Measured with 100 load-
# generator clients at a 3.8 MiB model and 1 MiB chunks, 8 slots lowered the server's peak
# from 330 to 260 MiB but rounds took 24 s instead of 7 (docs/config.md).
DEFAULT_MAX_TRANSFERS = 0
MAX_TRANSFERS = 4096
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
    RPC-termination callback)."""

    def __init__(self, slots: TransferSlots, who: str) -> None:
        self._slots = slots
        self._who = who
        self._started = slots.clock()
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._slots._release(self._who, self._slots.clock() - self._started)


class TransferSlots:
    """Thread-safe. ``capacity`` 0 means unlimited (every acquire succeeds)."""

    def __init__(self, capacity: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0 (0: unlimited)")
        self.capacity = capacity
        self.clock = clock
        self._lock = threading.Lock()
        self._in_use = 0
        self._mean_s = INITIAL_TRANSFER_S
        self._waiting: dict[str, float] = {}  # client id -> when it was last refused
        self._holders: set[str] = set()  # a client holds at most one slot

    @property
    def in_use(self) -> int:
        with self._lock:
            return self._in_use

    def acquire(self, who: str) -> Lease:
        """A slot for ``who``'s transfer, or ServerBusyError with a retry_after hint."""
        now = self.clock()
        with self._lock:
            if self.capacity == 0:
                self._in_use += 1
                return Lease(self, who)
            if who not in self._holders and self._in_use < self.capacity:
                self._in_use += 1
                self._holders.add(who)
                self._waiting.pop(who, None)
                return Lease(self, who)
            # Also for a client that already holds one (e.g. its earlier stream, dropped on
            # its side, not yet ended here): one client cannot take every slot.
            self._waiting[who] = now
            hint = self._hint_locked(now)
        raise ServerBusyError(
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

    def _release(self, who: str, held_s: float) -> None:
        with self._lock:
            self._in_use -= 1
            self._holders.discard(who)
            self._mean_s += _SMOOTHING * (max(held_s, 0.0) - self._mean_s)


__all__ = ["DEFAULT_MAX_TRANSFERS", "MAX_TRANSFERS", "Lease", "ServerBusyError", "TransferSlots"]
