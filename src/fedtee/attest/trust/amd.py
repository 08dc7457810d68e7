"""AMD's SEV-SNP roots of trust: the ARK and ASK of Milan, Genoa and Turin, as package data.

``amd_<product>.pem`` (next to this module, each with a SOURCE comment) holds the ASK
(``SEV-<Product>``) followed by the ARK (``ARK-<Product>``) exactly as AMD KDS serves them at
``/vcek/v1/<Product>/cert_chain``. Their SHA-256 fingerprints are pinned below, so a modified
package file is refused rather than trusted.

:func:`anchors` gives the three ARKs (self-signed roots, for ``TrustAnchors.roots``);
:func:`intermediates` gives the three ASKs, which the SNP verifier uses when the evidence
carries no ASK of its own. An ASK is never trusted by itself: it must chain to a trusted ARK.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes

# product -> (ASK fingerprint, ARK fingerprint), SHA-256 of the DER.
PINNED: Final = {
    "milan": (
        bytes.fromhex("67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b"),
        bytes.fromhex("69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"),
    ),
    "genoa": (
        bytes.fromhex("5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521"),
        bytes.fromhex("4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"),
    ),
    "turin": (
        bytes.fromhex("5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185"),
        bytes.fromhex("1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"),
    ),
}


@cache
def _chain(product: str) -> tuple[x509.Certificate, x509.Certificate]:
    name = f"amd_{product}.pem"
    pem = resources.files(__package__).joinpath(name).read_bytes()
    certs = x509.load_pem_x509_certificates(pem)
    got = tuple(c.fingerprint(hashes.SHA256()) for c in certs)
    if got != PINNED[product]:
        raise RuntimeError(f"embedded {name} is not the pinned AMD ASK + ARK for {product}")
    return certs[0], certs[1]


def chain(product: str) -> tuple[x509.Certificate, x509.Certificate]:
    """``(ASK, ARK)`` for ``milan``, ``genoa`` or ``turin``."""
    return _chain(product.lower())


@cache
def anchors() -> tuple[x509.Certificate, ...]:
    """The ARKs of Milan, Genoa and Turin, for ``TrustAnchors(roots={SEV_SNP: ...})``."""
    return tuple(_chain(p)[1] for p in PINNED)


@cache
def intermediates() -> tuple[x509.Certificate, ...]:
    """The ASKs of Milan, Genoa and Turin (untrusted until chained to an ARK)."""
    return tuple(_chain(p)[0] for p in PINNED)


__all__ = ["PINNED", "anchors", "chain", "intermediates"]
