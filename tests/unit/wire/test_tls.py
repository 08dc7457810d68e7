"""Federation CA and server certificates."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from cryptography import x509

from fedtee.errors import ConfigError
from fedtee.wire import tls

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_server_cert_is_signed_by_ca_and_names_hosts() -> None:
    ca = tls.make_ca(name="fed CA", now=NOW)
    server = tls.make_server_cert(ca, names=["fl.example.org", "10.0.0.5"], now=NOW)
    cert = server.cert
    cert.verify_directly_issued_by(ca.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "fl.example.org"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.5"),
    }
    assert cert.public_key().public_numbers() == server.key.public_key().public_numbers()
    assert len(tls.server_public_key_der(server.cert_pem)) == 91


def test_other_ca_does_not_verify() -> None:
    server = tls.make_server_cert(tls.make_ca(name="a", now=NOW), now=NOW)
    with pytest.raises(ValueError):
        server.cert.verify_directly_issued_by(tls.make_ca(name="b", now=NOW).cert)


def test_bad_pem_is_config_error() -> None:
    with pytest.raises(ConfigError):
        tls.load_cert(b"not pem")
    with pytest.raises(ConfigError):
        tls.load_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
