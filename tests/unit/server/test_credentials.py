"""Server-signed credentials bound to the client's key."""

from __future__ import annotations

import pytest

from fedtee import identity
from fedtee.errors import CredentialError, Reason
from fedtee.server.credentials import CredentialAuthority

NOW = 1_800_000_000_000


def _issue(ca: CredentialAuthority, public: bytes) -> bytes:
    token, cred = ca.issue(
        client_id="c1",
        public_key=public,
        tee="sim",
        hardware_backed=False,
        code_identity=b"\x11" * 48,
        status="affirming",
        now_ms=NOW,
        ttl_ms=60_000,
    )
    assert cred.expires_ms == NOW + 60_000
    return token


def test_issue_and_verify() -> None:
    ca = CredentialAuthority(federation_id="fed", key=identity.generate())
    public = identity.public_key_der(identity.generate())
    cred = ca.verify(_issue(ca, public), now_ms=NOW + 1, client_id="c1", public_key=public)
    assert (cred.client_id, cred.tee, cred.hardware_backed) == ("c1", "sim", False)
    assert cred.code_identity == "11" * 48


def test_rejections_each_have_their_reason() -> None:
    key = identity.generate()
    ca = CredentialAuthority(federation_id="fed", key=key)
    public = identity.public_key_der(identity.generate())
    token = _issue(ca, public)
    cases: list[tuple[Reason, object]] = [
        (Reason.CREDENTIAL_EXPIRED, lambda: ca.verify(token, now_ms=NOW + 60_000)),
        (Reason.CREDENTIAL_WRONG_CLIENT, lambda: ca.verify(token, now_ms=NOW, client_id="c2")),
        (
            Reason.CREDENTIAL_WRONG_CLIENT,
            lambda: ca.verify(
                token, now_ms=NOW, public_key=identity.public_key_der(identity.generate())
            ),
        ),
        (
            Reason.CREDENTIAL_INVALID,
            lambda: CredentialAuthority(federation_id="fed", key=identity.generate()).verify(
                token, now_ms=NOW
            ),
        ),
        (
            Reason.CREDENTIAL_INVALID,
            lambda: CredentialAuthority(federation_id="other", key=key).verify(token, now_ms=NOW),
        ),
        (Reason.CREDENTIAL_INVALID, lambda: ca.verify(token[:-3], now_ms=NOW)),
        (Reason.CREDENTIAL_INVALID, lambda: ca.verify(b"\x02" + token[1:], now_ms=NOW)),
        (Reason.CREDENTIAL_INVALID, lambda: ca.verify(b"", now_ms=NOW)),
    ]
    for reason, call in cases:
        with pytest.raises(CredentialError) as exc:
            call()  # type: ignore[operator]
        assert exc.value.reason is reason


def test_every_flipped_bit_in_payload_is_rejected() -> None:
    ca = CredentialAuthority(federation_id="fed", key=identity.generate())
    token = _issue(ca, identity.public_key_der(identity.generate()))
    for i in range(1, min(len(token), 200), 7):
        bad = bytearray(token)
        bad[i] ^= 0x01
        with pytest.raises(CredentialError):
            ca.verify(bytes(bad), now_ms=NOW)
