"""Mutual attestation, client side: verify the aggregator before sending it anything.

The question is not only "does some TEE run the approved aggregator?" but "is the TLS
session this client sends its updates over the one that TEE vouches for?". So:

1. **Pin.** :func:`pin_server` makes one TLS handshake to the server with Python's ``ssl``,
   verifying its certificate against the federation CA and the expected name exactly as the
   gRPC channel would, and keeps that certificate. The client then opens its gRPC channel
   with *that certificate* as its only trust anchor
   (``GrpcTransport.connect(ca_pem=pinned.certificate_pem)``): every call on the channel,
   reconnections included, reaches only a TLS endpoint holding this certificate's private
   key. A man in the middle with another certificate from the same CA is refused by TLS.
2. **Challenge.** A fresh random nonce per check (:data:`NONCE_BYTES`), sent in
   ``GetServerEvidence`` over the pinned channel. TEEs with a challenge extension (TPM) get
   a second request: the client makes a credential for the server's AK and EK
   (:func:`fedtee.attest.challenge.extension_for`), with a second fresh nonce.
3. **Verify and appraise** with the verifier library and the policy format clients share
   with servers (:func:`fedtee.attest.policy.evaluate`), checking that ``report_data`` binds
   (nonce, pinned key) in the server domain (:data:`~fedtee.attest.binding.SERVER_DOMAIN_TAG`),
   then the TEE's challenge answer (TPM: the AK is bound to the EK).
4. **Refuse** a server that fails any step: :class:`ServerAttestationFailed` with the stable
   reason of the first failure, and an ERROR log line. The runtime runs the check before
   every enrolment (:class:`~fedtee.client.runtime.ClientRuntime` ``server_check``), so no
   evidence, receipt or update ever reaches a refused server.

``require = false`` accepts a server that has no TEE at all (it answers ``device_absent``),
with a warning; a server that offers evidence that fails is refused either way.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedtee.attest.binding import SERVER_DOMAIN_TAG
from fedtee.attest.challenge import PreparedChallenge, extension_for
from fedtee.attest.model import CollateralSource, Evidence, TrustAnchors
from fedtee.attest.policy import Policy, evaluate
from fedtee.attest.result import AttestationResult
from fedtee.client.transport import ServerUnavailable
from fedtee.errors import AttestationError, ConfigError, ProtocolError, Reason
from fedtee.wire.messages import ServerEvidence

log = logging.getLogger(__name__)

NONCE_BYTES = 32
HANDSHAKE_TIMEOUT_S = 10.0


class ServerAttestationFailed(AttestationError):
    """The aggregator failed mutual attestation: this client sends it nothing."""

    default_reason = Reason.SERVER_NOT_ATTESTED


class ServerEvidenceSource(Protocol):
    """Where the check gets the server's evidence (``GrpcTransport`` over a pinned channel)."""

    def get_server_evidence(self, *, nonce: bytes, aux: Mapping[str, bytes]) -> ServerEvidence: ...


@dataclass(frozen=True, kw_only=True)
class PinnedServer:
    """The certificate a server presented, checked against the federation CA."""

    certificate_pem: bytes
    public_key: bytes  # DER SubjectPublicKeyInfo: what the server's evidence must bind

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()


def _spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pin_server(
    address: str,
    *,
    ca_pem: bytes,
    server_name: str | None = None,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> PinnedServer:
    """One TLS handshake to ``address`` (host:port): the server's certificate, verified
    against ``ca_pem`` and the name (``server_name`` or the host). Unreachable ->
    :class:`ServerUnavailable`; a certificate that does not verify ->
    :class:`ServerAttestationFailed` (``chain_untrusted_root``)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"server address must be host:port, got {address!r}")
    host = host.strip("[]")
    try:
        context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"the federation CA is not PEM certificates: {exc}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])  # what gRPC offers; a gRPC server may insist on it
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=server_name or host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLCertVerificationError as exc:
        raise ServerAttestationFailed(
            f"the certificate of {address} does not verify against the federation CA: "
            f"{exc.verify_message}",
            reason=Reason.CHAIN_UNTRUSTED_ROOT,
        ) from exc
    except (OSError, ssl.SSLError) as exc:  # refused, reset, timed out, handshake failure
        raise ServerUnavailable(f"TLS handshake with {address} failed: {exc}") from exc
    if not der:
        raise ServerUnavailable(f"{address} presented no certificate")
    cert = x509.load_der_x509_certificate(der)
    return PinnedServer(
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM), public_key=_spki(cert)
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ServerVerifier:
    """Checks the aggregator's evidence over a channel pinned to ``pinned`` (see module doc).

    Call :meth:`check` (or the object itself) once per connection or enrolment, before any
    update; it returns the attestation result (None when ``require`` is false and the server
    has no TEE) or raises :class:`ServerAttestationFailed`. :class:`ServerUnavailable` (also
    for a server that is rate limiting its evidence) means: retry later.
    """

    def __init__(
        self,
        *,
        source: ServerEvidenceSource,
        pinned: PinnedServer,
        policy: Policy,
        trust: TrustAnchors,
        collateral: CollateralSource,
        require: bool = True,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._source = source
        self._pinned = pinned
        self._policy = policy
        self._trust = trust
        self._collateral = collateral
        self._require = require
        self._clock = clock
        self.last_result: AttestationResult | None = None

    def _refuse(self, reason: Reason, message: str) -> ServerAttestationFailed:
        log.error("refusing the server (%s): %s; no update will be sent to it", reason, message)
        return ServerAttestationFailed(message, reason=reason)

    def _ask(self, nonce: bytes, aux: Mapping[str, bytes]) -> ServerEvidence | None:
        try:
            reply = self._source.get_server_evidence(nonce=nonce, aux=aux)
        except ServerUnavailable:
            raise
        except ProtocolError as exc:
            if exc.reason is Reason.DEVICE_BUSY:
                raise ServerUnavailable(f"server evidence is busy: {exc.message}") from exc
            if exc.reason is Reason.DEVICE_ABSENT and not aux:
                return None
            raise self._refuse(exc.reason, f"GetServerEvidence failed: {exc.message}") from exc
        except AttestationError as exc:  # the reply's evidence did not even parse
            raise self._refuse(exc.reason, f"malformed server evidence: {exc.message}") from exc
        if not hmac.compare_digest(reply.public_key, self._pinned.public_key):
            got = hashlib.sha256(reply.public_key).hexdigest()
            raise self._refuse(
                Reason.KEY_NOT_BOUND,
                f"the evidence names TLS key sha256:{got[:16]}..., but this connection is "
                f"pinned to sha256:{self._pinned.fingerprint[:16]}...",
            )
        return reply

    def check(self) -> AttestationResult | None:
        now = self._clock()
        nonce = secrets.token_bytes(NONCE_BYTES)
        reply = self._ask(nonce, {})
        if reply is None:
            if self._require:
                raise self._refuse(
                    Reason.SERVER_NOT_ATTESTED,
                    "the server runs outside a TEE (it has no evidence) and "
                    "[server_attestation] require = true",
                )
            log.warning(
                "the server offers no TEE evidence; continuing UNATTESTED because "
                "[server_attestation] require = false"
            )
            self.last_result = None
            return None
        evidence = reply.evidence
        prepared: PreparedChallenge | None = None
        ext = extension_for(evidence.tee)
        if ext is not None:
            # e.g. TPM: a credential only the TPM holding this EK can activate, for this AK.
            nonce = secrets.token_bytes(NONCE_BYTES)
            try:
                prepared = ext.prepare(
                    nonce=nonce, request=reply.challenge_request, trust=self._trust, now=now
                )
            except AttestationError as exc:
                raise self._refuse(exc.reason, exc.message) from exc
            second = self._ask(nonce, prepared.to_client)
            if second is None or second.evidence.tee is not evidence.tee:
                raise self._refuse(
                    Reason.MESSAGE_MALFORMED, "the server changed TEE between two requests"
                )
            evidence = second.evidence
        result = self._verify(evidence, nonce=nonce, now=now, prepared=prepared)
        log.info(
            "server attested: %s%s, code identity %s, %s",
            evidence.tee.value,
            "" if result.hardware_backed else " (SIMULATED, not hardware-backed)",
            (result.code_identity or b"").hex()[:32],
            result.status.value,
        )
        self.last_result = result
        return result

    __call__ = check

    def _verify(
        self, evidence: Evidence, *, nonce: bytes, now: datetime, prepared: PreparedChallenge | None
    ) -> AttestationResult:
        evaluation = evaluate(
            evidence,
            policy=self._policy,
            trust=self._trust,
            collateral=self._collateral,
            now=now,
            nonce=nonce,
            public_key=self._pinned.public_key,
            domain=SERVER_DOMAIN_TAG,
        )
        result = evaluation.result
        if not result.accepted or evaluation.verified is None:
            detail = "; ".join(str(v) for v in result.violations) or "contraindicated"
            raise self._refuse(result.first_reason or Reason.INTERNAL, detail)
        if prepared is not None:
            ext = extension_for(evidence.tee)
            assert ext is not None
            try:
                ext.check(evidence=evidence, verified=evaluation.verified, kept=prepared.kept)
            except AttestationError as exc:
                raise self._refuse(exc.reason, exc.message) from exc
        return result


__all__ = [
    "NONCE_BYTES",
    "PinnedServer",
    "ServerAttestationFailed",
    "ServerEvidenceSource",
    "ServerVerifier",
    "pin_server",
]
