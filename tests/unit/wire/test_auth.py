"""Proof of possession over gRPC metadata."""

from __future__ import annotations

import pytest

from fedtee import identity
from fedtee.errors import CredentialError, Reason
from fedtee.wire import auth

METHOD = "/fedtee.v1.Federation/GetTask"
NOW = 1_800_000_000_000


def _presented(
    key: identity.PrivateKey, *, method: str = METHOD, ts: int = NOW
) -> auth.PresentedAuth:
    md = auth.client_metadata(method=method, credential=b"cred", private_key=key, now_ms=ts)
    return auth.read_metadata(md)


def test_valid_proof_accepted() -> None:
    key = identity.generate()
    presented = _presented(key)
    assert presented.credential == b"cred"
    auth.verify_pop(
        presented, method=METHOD, public_key=identity.public_key_der(key), now_ms=NOW + 5
    )


@pytest.mark.parametrize(
    "case", ["other_key", "other_method", "stale", "future", "other_credential"]
)
def test_bad_proofs_rejected(case: str) -> None:
    key = identity.generate()
    presented = _presented(key, ts=NOW)
    public = identity.public_key_der(key)
    now, method = NOW, METHOD
    if case == "other_key":
        public = identity.public_key_der(identity.generate())
    elif case == "other_method":
        method = "/fedtee.v1.Federation/SubmitUpdate"
    elif case == "stale":
        now = NOW + auth.DEFAULT_SKEW_MS + 1
    elif case == "future":
        now = NOW - auth.DEFAULT_SKEW_MS - 1
    else:
        presented = auth.PresentedAuth(
            credential=b"other", pop=presented.pop, timestamp_ms=presented.timestamp_ms
        )
    with pytest.raises(CredentialError) as exc:
        auth.verify_pop(presented, method=method, public_key=public, now_ms=now)
    assert exc.value.reason is Reason.CREDENTIAL_INVALID


def test_missing_and_malformed_metadata() -> None:
    with pytest.raises(CredentialError) as exc:
        auth.read_metadata([])
    assert exc.value.reason is Reason.CREDENTIAL_MISSING
    base = [(auth.CREDENTIAL_KEY, b"c"), (auth.POP_KEY, b"s"), (auth.TIMESTAMP_KEY, "12")]
    assert auth.read_metadata(base).timestamp_ms == 12
    for bad in (
        [(auth.CREDENTIAL_KEY, b"c" * 5000), base[1], base[2]],
        [base[0], (auth.POP_KEY, b"s" * 200), base[2]],
        [base[0], base[1], (auth.TIMESTAMP_KEY, "-1")],
        [base[0], base[1], (auth.TIMESTAMP_KEY, "1" * 30)],
        [*base, base[0]],
    ):
        with pytest.raises(CredentialError) as exc:
            auth.read_metadata(bad)
        assert exc.value.reason is Reason.CREDENTIAL_INVALID


def test_upload_go_is_the_servers_go_and_nothing_else() -> None:
    assert auth.upload_go(((auth.UPLOAD_GO_KEY, auth.UPLOAD_GO),))
    assert auth.upload_go((("other", "x"), (auth.UPLOAD_GO_KEY, b"go")))  # bytes, as received
    # A refused upload's initial metadata (trailers-only: none) or anything else is no go.
    assert not auth.upload_go(None)
    assert not auth.upload_go(())
    assert not auth.upload_go(((auth.UPLOAD_GO_KEY, "stop"),))
    assert not auth.upload_go(((auth.REASON_KEY, "server_busy"),))
