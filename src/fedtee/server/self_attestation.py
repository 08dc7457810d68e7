"""Mutual attestation, server side: the aggregator's own evidence for ``GetServerEvidence``.

A client sends a fresh nonce; the aggregator's attester returns evidence whose user data is
``report_data(nonce, TLS public key, domain=SERVER_DOMAIN_TAG)`` (:mod:`fedtee.attest.binding`):
the TEE vouches that the key the client's TLS session ends at belongs to this code. The
server-direction tag means no client's enrolment evidence can ever pass as the server's.

TEEs whose freshness needs more than a nonce take two requests. A TPM proves that its AK
lives next to its certified EK by credential activation: the first reply carries
``challenge_request`` (EK certificate, EK and AK public areas); the client makes a
credential for them (:class:`fedtee.attest.verify.tpm.TpmChallenge`) and sends it back with
a new nonce; the server activates it and quotes in one locked step, so concurrent clients
never see each other's secret.

Bounds: a token bucket limits evidence to ``max_per_s`` (GetServerEvidence is
unauthenticated, and a quote costs the device real work); one attester call at a time, and
a caller that cannot get the device within ``busy_timeout_s`` is told DEVICE_BUSY.

Programmatic use (what ``fedtee server start`` does with ``[server_attestation]``)::

    attester = build_server_attester("tpm", measurement=measure_server(), tcti="swtpm:...")
    FederationServer(ServerConfig(..., attester=attester))
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedtee.attest.attesters import attester_for
from fedtee.attest.attesters.measure import measure_code
from fedtee.attest.binding import SERVER_DOMAIN_TAG, report_data
from fedtee.attest.model import Attester, Evidence, TeeType
from fedtee.errors import ConfigError, DeviceError, FedteeError, ProtocolError, Reason
from fedtee.wire.messages import ServerEvidence, ServerEvidenceRequest

log = logging.getLogger(__name__)

DEFAULT_MAX_PER_S = 10.0
DEFAULT_BUSY_TIMEOUT_S = 5.0
ACTIVATED_AUX = "activated_secret"  # TPM evidence aux: the answer to a client's credential
SERVER_MEASUREMENT_CONFIG = b"fedtee server\n"


def measure_server(package_dir: Path | None = None) -> bytes:
    """The aggregator's code measurement: SHA-384 over every ``*.py`` file of the installed
    fedtee package (:func:`~fedtee.attest.attesters.measure.measure_code`), so a changed byte
    anywhere in the server's code changes it. Clients put it (or, for a TPM, the PCR value
    :func:`fedtee.attest.verify.tpm.code_pcr_value` of it) in their server policy."""
    root = package_dir or Path(__file__).resolve().parent.parent
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    return measure_code(files, config=SERVER_MEASUREMENT_CONFIG)


def build_server_attester(tee: str, *, measurement: bytes, **options: Any) -> Attester:
    """The aggregator's attester for ``tee`` (a TEE name or ``"auto"``).

    ``options`` go to :func:`fedtee.attest.attesters.attester_for`, except for ``sim``, which
    takes ``sim_root`` (a :class:`~fedtee.attest.attesters.sim.SimRoot`) and makes a fresh
    simulated platform for this server. ``measurement`` (48 bytes, see :func:`measure_server`)
    is what the sim reports, and what a TPM's code PCR is extended with at start; the
    hardware TEEs measure their launch themselves and ignore it.
    """
    if tee == TeeType.SIM.value:
        from fedtee.attest.attesters.sim import SimAttester, SimPlatform

        root = options.pop("sim_root", None)
        if root is None:
            raise ConfigError("a sim server attester needs sim_root (the sim root and its key)")
        return SimAttester(platform=SimPlatform.generate(root), measurement=measurement, **options)
    attester = attester_for(tee, **options)
    extend = getattr(attester, "extend_code_pcr", None)
    if callable(extend):
        try:
            extend(measurement)
        except BaseException:
            close = getattr(attester, "close", None)
            if callable(close):
                close()
            raise
    return attester


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


class ServerAttestation:
    """Answers ``GetServerEvidence`` with the aggregator's attester (see the module doc)."""

    def __init__(
        self,
        *,
        attester: Attester,
        tls_public_key: bytes,
        max_per_s: float = DEFAULT_MAX_PER_S,
        busy_timeout_s: float = DEFAULT_BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_s <= 0:
            raise ConfigError("server attestation max_per_s must be positive")
        self.attester = attester
        self.tls_public_key = tls_public_key
        self._busy_timeout_s = busy_timeout_s
        self._bucket = _Bucket(max_per_s, max(1.0, max_per_s), clock)
        self._device = threading.Lock()  # one ESAPI / configfs entry at a time
        self._challenge_request: Mapping[str, bytes] | None = None

    @property
    def tee(self) -> TeeType:
        return self.attester.tee

    def _challenge_input(self) -> Mapping[str, bytes]:
        if self._challenge_request is None:
            make = getattr(self.attester, "challenge_request", None)
            self._challenge_request = dict(make()) if callable(make) else {}
        return self._challenge_request

    def evidence(self, request: ServerEvidenceRequest) -> ServerEvidence:
        """Evidence bound to ``request.nonce`` and the TLS key; typed errors only."""
        if not self._bucket.take():
            raise ProtocolError(
                "server evidence is rate limited; retry shortly", reason=Reason.DEVICE_BUSY
            )
        bound = report_data(
            nonce=request.nonce,
            public_key=self.tls_public_key,
            size=self.attester.report_data_size,
            domain=SERVER_DOMAIN_TAG,
        )
        if not self._device.acquire(timeout=self._busy_timeout_s):
            raise DeviceError(
                f"the server's {self.tee.value} device is busy", reason=Reason.DEVICE_BUSY
            )
        try:
            challenge = self._challenge_input()
            if request.aux:
                activate = getattr(self.attester, "activate", None)
                if not callable(activate):
                    raise ProtocolError(
                        f"a {self.tee.value} server takes no challenge answer (aux)",
                        reason=Reason.MESSAGE_MALFORMED,
                    )
                activate(request.aux)
            evidence = self.attester.attest(bound)
            if not request.aux and ACTIVATED_AUX in evidence.aux:
                # A TPM attester keeps the last activated secret: it answers only the client
                # that made it, so no other client's evidence carries it.
                aux = {k: v for k, v in evidence.aux.items() if k != ACTIVATED_AUX}
                evidence = Evidence(evidence.tee, evidence.data, aux)
        except FedteeError:
            raise
        except Exception as exc:  # a device library's own exception: never leak it raw
            log.exception("server attester failed")
            raise DeviceError(
                f"the server's {self.tee.value} attester failed: {type(exc).__name__}",
                reason=Reason.DEVICE_FAILED,
            ) from exc
        finally:
            self._device.release()
        return ServerEvidence(
            evidence=evidence, public_key=self.tls_public_key, challenge_request=challenge
        )


__all__ = [
    "DEFAULT_MAX_PER_S",
    "ServerAttestation",
    "build_server_attester",
    "measure_server",
]
