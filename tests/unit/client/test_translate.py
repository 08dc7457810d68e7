"""How a gRPC failure becomes a typed fedtee error on the client (unit seam: a minimal RpcError
with the code, details and trailing metadata a real call would carry)."""

from __future__ import annotations

import grpc
import pytest

from fedtee.client.grpc_transport import translate
from fedtee.client.transport import ServerBusy, ServerUnavailable
from fedtee.errors import CredentialError, ProtocolError, Reason, UpdateRejected
from fedtee.wire import auth


class _Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, reason: str | None = None) -> None:
        self._code = code
        self._details = details
        self._trailing = () if reason is None else ((auth.REASON_KEY, reason),)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._trailing


def test_grpc_load_shedding_is_retryable_not_malformed() -> None:
    # What a grpc server past maximum_concurrent_rpcs answers: no fedtee reason.
    error = translate(
        "GetTask",
        _Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"),
    )
    assert isinstance(error, ServerBusy)
    assert isinstance(error, ServerUnavailable)  # callers that only know "retry" still do
    assert "Concurrent RPC limit exceeded!" in str(error)


def test_server_busy_carries_the_servers_retry_after_hint_bounded() -> None:
    def busy(hint: str | None) -> Exception:
        failed = _Failed(
            grpc.StatusCode.RESOURCE_EXHAUSTED, "all slots in use", Reason.SERVER_BUSY.value
        )
        if hint is not None:
            failed._trailing += ((auth.RETRY_AFTER_KEY, hint),)
        return translate("DownloadModel", failed)

    error = busy("750")
    assert isinstance(error, ServerBusy) and error.reason is Reason.SERVER_BUSY
    assert error.retry_after_s == 0.75
    huge, tiny, junk, missing = busy("9" * 40), busy("0"), busy("soon"), busy(None)
    assert isinstance(huge, ServerBusy) and huge.retry_after_s == 60.0
    assert isinstance(tiny, ServerBusy) and tiny.retry_after_s == 0.01
    assert isinstance(junk, ServerBusy) and junk.retry_after_s is None  # backoff instead
    assert isinstance(missing, ServerBusy) and missing.retry_after_s is None


def test_a_refusal_with_a_reason_keeps_it() -> None:
    error = translate(
        "SubmitUpdate",
        _Failed(grpc.StatusCode.RESOURCE_EXHAUSTED, "too big", Reason.MESSAGE_TOO_LARGE.value),
    )
    assert isinstance(error, ProtocolError)
    assert error.reason is Reason.MESSAGE_TOO_LARGE


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, None, ServerUnavailable),
        (grpc.StatusCode.UNAUTHENTICATED, None, CredentialError),
        (grpc.StatusCode.PERMISSION_DENIED, Reason.CREDENTIAL_EXPIRED.value, CredentialError),
        (grpc.StatusCode.FAILED_PRECONDITION, Reason.UPDATE_NONFINITE.value, UpdateRejected),
        (grpc.StatusCode.INVALID_ARGUMENT, None, ProtocolError),
    ],
)
def test_other_failures(code: grpc.StatusCode, reason: str | None, kind: type) -> None:
    assert isinstance(translate("GetTask", _Failed(code, "x", reason)), kind)
