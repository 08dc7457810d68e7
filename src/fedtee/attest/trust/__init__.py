"""Roots of trust and collateral.

:func:`embedded_anchors` gives the vendors' real roots shipped with fedtee (Intel SGX Root CA
for SGX and TDX, AMD ARKs for SEV-SNP). It never includes a sim root: a simulated TEE is
trusted only when an operator passes its root explicitly.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from fedtee.attest.model import TeeType, TrustAnchors

_log = logging.getLogger(__name__)


def _load(module: str) -> tuple[Any, ...]:
    # Imported here, not at module import: the vendor modules load PEMs and x509 code that a
    # sim-only user never needs, and a missing vendor module must not break the others.
    try:
        certs: tuple[Any, ...] = importlib.import_module(module).anchors()
    except ImportError:
        _log.warning("%s is not available; its roots are not trusted", module)
        return ()
    return certs


def embedded_anchors() -> TrustAnchors:
    """The vendor roots embedded in fedtee, per TEE type (no sim root, ever)."""
    intel = _load("fedtee.attest.trust.intel")
    amd = _load("fedtee.attest.trust.amd")
    roots: dict[TeeType, tuple[Any, ...]] = {}
    if intel:
        roots[TeeType.SGX] = intel
        roots[TeeType.TDX] = intel
    if amd:
        roots[TeeType.SEV_SNP] = amd
    return TrustAnchors(roots=roots)


__all__ = ["embedded_anchors"]
