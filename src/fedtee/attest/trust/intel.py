"""Intel's DCAP root of trust: the Intel SGX Root CA, embedded as package data.

The same root signs the PCK chains of SGX and TDX quotes, the TCB Signing certificate that
signs TCB info and QE identity, and the root CRL. ``intel_sgx_root_ca.pem`` (next to this
module) carries a SOURCE comment; its SHA-256 fingerprint is pinned below so a modified
package file is refused rather than trusted.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

ROOT_PEM_NAME: Final = "intel_sgx_root_ca.pem"
# SHA-256 of the DER of CN=Intel SGX Root CA (2018-05-21..2049-12-31).
ROOT_FINGERPRINT: Final = bytes.fromhex(
    "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"
)


@cache
def anchors() -> tuple[x509.Certificate, ...]:
    """The Intel SGX Root CA, for ``TrustAnchors(roots={SGX: ..., TDX: ...})``."""
    pem = resources.files(__package__).joinpath(ROOT_PEM_NAME).read_bytes()
    certs = tuple(x509.load_pem_x509_certificates(pem))
    for cert in certs:
        if cert.fingerprint(hashes.SHA256()) != ROOT_FINGERPRINT:
            raise RuntimeError(f"embedded {ROOT_PEM_NAME} is not the pinned Intel SGX Root CA")
    return certs


__all__ = ["ROOT_FINGERPRINT", "anchors"]
