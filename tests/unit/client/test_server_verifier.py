"""ServerVerifier against hostile or odd servers (a fake evidence source: negative cases only;
the real gRPC paths are in tests/integration/test_mutual_attestation.py)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.policy import Policy
from fedtee.attest.trust.collateral import NoCollateral
from fedtee.client.server_attestation import PinnedServer, ServerAttestationFailed, ServerVerifier
from fedtee.client.transport import ServerUnavailable
from fedtee.errors import FedteeError, ProtocolError, Reason
from fedtee.wire.messages import ServerEvidence

KEY = b"\x30\x59" + b"pinned-tls-key" * 6
PINNED = PinnedServer(certificate_pem=b"", public_key=KEY)
POLICY = Policy.from_toml(
    'version = 1\n[tee.sim]\nallow_simulated = true\n[tee.tpm.reference]\npcr23 = ["'
    + "00" * 32
    + '"]\n'
)


class Source:
    def __init__(self, reply: ServerEvidence | None = None, error: Exception | None = None):
        self.reply, self.error = reply, error
        self.nonces: list[bytes] = []

    def get_server_evidence(self, *, nonce: bytes, aux: Mapping[str, bytes]) -> ServerEvidence:
        self.nonces.append(nonce)
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


def check(source: Source, *, require: bool = True) -> object:
    return ServerVerifier(
        source=source,
        pinned=PINNED,
        policy=POLICY,
        trust=TrustAnchors(),
        collateral=NoCollateral(),
        require=require,
    ).check()


@settings(max_examples=60, deadline=None)
@given(
    tee=st.sampled_from([TeeType.SIM, TeeType.TPM]),
    data=st.binary(max_size=600),
    aux=st.dictionaries(
        st.sampled_from(["signature", "pcrs", "ak_public", "platform_cert"]),
        st.binary(max_size=200),
        max_size=4,
    ),
    challenge=st.dictionaries(
        st.sampled_from(["ak_public", "ek_cert", "ek_public"]), st.binary(max_size=200), max_size=3
    ),
)
def test_garbage_evidence_is_refused_with_a_reason_never_a_crash(
    tee: TeeType, data: bytes, aux: dict[str, bytes], challenge: dict[str, bytes]
) -> None:
    reply = ServerEvidence(
        evidence=Evidence(tee, data, aux), public_key=KEY, challenge_request=challenge
    )
    with pytest.raises(ServerAttestationFailed) as err:
        check(Source(reply))
    assert isinstance(err.value.reason, Reason)


def test_each_check_sends_a_fresh_nonce() -> None:
    source = Source(ServerEvidence(evidence=Evidence(TeeType.SIM, b"x"), public_key=KEY))
    for _ in range(2):
        with pytest.raises(ServerAttestationFailed):
            check(source)
    assert len(source.nonces) == 2 and source.nonces[0] != source.nonces[1]
    assert all(len(n) == 32 for n in source.nonces)


def test_a_server_without_a_tee_passes_only_when_not_required() -> None:
    absent = ProtocolError("no TEE", reason=Reason.DEVICE_ABSENT)
    assert check(Source(error=absent), require=False) is None
    with pytest.raises(ServerAttestationFailed) as err:
        check(Source(error=absent))
    assert err.value.reason is Reason.SERVER_NOT_ATTESTED


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ProtocolError("busy", reason=Reason.DEVICE_BUSY), ServerUnavailable),
        (ServerUnavailable("down"), ServerUnavailable),
        (ProtocolError("bad", reason=Reason.DEVICE_FAILED), ServerAttestationFailed),
    ],
)
def test_transport_errors(error: Exception, expected: type[FedteeError]) -> None:
    with pytest.raises(expected):
        check(Source(error=error), require=False)
