"""Verifications per second for the real SGX (v3) and TDX (v4) quotes, warm collateral.

Run: ``.venv/bin/python bench/bench_dcap.py [--seconds S]``. One process, one thread, so the
figure is per core. "Warm" means the collateral, chains, CRLs and the QE report were seen
once before (the verifier caches those checks by their bytes and certificate fingerprints
and re-checks times on every call, as it would for a platform that attests repeatedly); the
quote is parsed and its ECDSA signature verified in full every time. Figures are only
printed.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.trust.intel import anchors
from fedtee.attest.verify.sgx import SgxVerifier
from fedtee.attest.verify.tdx import TdxVerifier
from fedtee.errors import CollateralError, Reason

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


class _Collateral:
    def __init__(self, items: Mapping[tuple[str, str], bytes]) -> None:
        self._items = dict(items)

    def get(self, kind: str, key: str) -> bytes:
        try:
            return self._items[(kind, key)]
        except KeyError:
            raise CollateralError(f"{kind}/{key}", reason=Reason.COLLATERAL_MISSING) from None


def _bundle(tee: str) -> _Collateral:
    root = DATA / tee / "collateral"
    return _Collateral({(f.parent.name, f.name): f.read_bytes() for f in root.glob("*/*")})


def _rate(name: str, run: object, seconds: float) -> None:
    assert callable(run)
    run()  # warm the caches
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            run()
        count += 50
    print(f"{name}: {count / elapsed:,.0f} verifications/s ({count} in {elapsed:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    trust = TrustAnchors(roots={TeeType.SGX: anchors(), TeeType.TDX: anchors()})
    print(f"python {platform.python_version()} on {platform.machine()}, one core")

    sgx = Evidence(TeeType.SGX, (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes())
    sgx_collateral, sgx_at = _bundle("sgx"), datetime.fromisoformat("2025-03-20T00:00:00+00:00")
    _rate(
        "sgx quote v3 (occlum)",
        lambda: SgxVerifier().verify(sgx, trust=trust, collateral=sgx_collateral, now=sgx_at),
        args.seconds,
    )

    tdx_quote = (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935]
    tdx = Evidence(TeeType.TDX, tdx_quote)
    tdx_collateral, tdx_at = _bundle("tdx"), datetime.fromisoformat("2023-07-01T01:00:00+00:00")
    _rate(
        "tdx quote v4 (SPR E4)",
        lambda: TdxVerifier().verify(tdx, trust=trust, collateral=tdx_collateral, now=tdx_at),
        args.seconds,
    )


if __name__ == "__main__":
    main()
