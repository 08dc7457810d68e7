import hashlib

import pytest

from fedtee.attest.binding import DOMAIN_TAG, check_report_data, report_data
from fedtee.errors import Reason, VerificationError

NONCE = bytes(range(32))
KEY = b"\x30\x59" + b"k" * 89


def test_report_data_is_sha512_of_length_prefixed_fields() -> None:
    expected = hashlib.sha512(
        DOMAIN_TAG + (32).to_bytes(4, "big") + NONCE + len(KEY).to_bytes(4, "big") + KEY
    ).digest()
    assert report_data(nonce=NONCE, public_key=KEY) == expected


@pytest.mark.parametrize("size", [32, 48, 64])
def test_size_picks_hash(size: int) -> None:
    assert len(report_data(nonce=NONCE, public_key=KEY, size=size)) == size


def test_fields_are_not_ambiguous() -> None:
    # Moving a byte from the nonce to the key must change the result.
    a = report_data(nonce=NONCE + b"x", public_key=KEY)
    b = report_data(nonce=NONCE, public_key=b"x" + KEY)
    assert a != b


def test_check_accepts_binding_and_rejects_other_key() -> None:
    good = report_data(nonce=NONCE, public_key=KEY, size=32)
    check_report_data(found=good, nonce=NONCE, public_key=KEY)
    with pytest.raises(VerificationError) as err:
        check_report_data(found=good, nonce=NONCE, public_key=KEY + b"!")
    assert err.value.reason is Reason.REPORT_DATA_MISMATCH


def test_short_nonce_is_refused() -> None:
    with pytest.raises(ValueError):
        report_data(nonce=b"short", public_key=KEY)


def test_server_domain_never_checks_as_client_domain() -> None:
    from fedtee.attest.binding import SERVER_DOMAIN_TAG

    server = report_data(nonce=NONCE, public_key=KEY, domain=SERVER_DOMAIN_TAG)
    assert server != report_data(nonce=NONCE, public_key=KEY)
    check_report_data(found=server, nonce=NONCE, public_key=KEY, domain=SERVER_DOMAIN_TAG)
    # Evidence a client made for its enrolment cannot pass as the server's, nor the reverse.
    with pytest.raises(VerificationError) as err:
        check_report_data(found=server, nonce=NONCE, public_key=KEY)
    assert err.value.reason is Reason.REPORT_DATA_MISMATCH
    with pytest.raises(VerificationError):
        check_report_data(
            found=report_data(nonce=NONCE, public_key=KEY),
            nonce=NONCE,
            public_key=KEY,
            domain=SERVER_DOMAIN_TAG,
        )


def test_unknown_domain_is_refused() -> None:
    with pytest.raises(ValueError, match="domain"):
        report_data(nonce=NONCE, public_key=KEY, domain=b"fedtee/v1/other")
