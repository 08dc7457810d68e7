"""Verifications per second for the real SEV-SNP report, PSA token and CCA token.

Run: ``.venv/bin/python bench/bench_snp_cose.py [--seconds S]``. One process, one thread, so
the figure is per core. SNP is measured warm: the VCEK -> ASK -> ARK chain was verified once
before and is cached by certificate digests (validity re-checked on every call); the report
is parsed and its ECDSA P-384 signature verified in full every time, and that check is the
floor. PSA (one ES256 check) and CCA (two ES384 checks, RAK decoding, binding hash) have no
chain to cache. The bare ECDSA P-384 verification rate is printed alongside as the ceiling.
Figures are only printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.trust import amd
from fedtee.attest.verify.cca import CcaVerifier
from fedtee.attest.verify.psa import PsaVerifier
from fedtee.attest.verify.snp import SnpVerifier
from fedtee.errors import CollateralError, Reason

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
NOW = datetime(2024, 1, 1, tzinfo=UTC)


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(f"{kind}/{key}", reason=Reason.COLLATERAL_MISSING)


def _rate(name: str, run: Callable[[], object], seconds: float) -> float:
    run()  # warm the caches
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            run()
        count += 50
    rate = count / elapsed
    print(f"{name:<28} {rate:10.0f} /s  ({count} in {elapsed:.2f} s)")
    return rate


def _b64(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, one thread")

    snp_ev = Evidence(
        tee=TeeType.SEV_SNP,
        data=(DATA / "sev-snp" / "attestation.bin").read_bytes(),
        aux={"vcek": (DATA / "sev-snp" / "vcek.der").read_bytes()},
    )
    snp_trust = TrustAnchors(roots={TeeType.SEV_SNP: amd.anchors()})
    snp = SnpVerifier()
    _rate(
        "sev-snp (warm chain)",
        lambda: snp.verify(snp_ev, trust=snp_trust, collateral=_NoCollateral(), now=NOW),
        args.seconds,
    )

    key = ec.generate_private_key(ec.SECP384R1())
    message = bytes(0x2A0)
    signature = key.sign(message, ec.ECDSA(hashes.SHA384()))
    public = key.public_key()
    _rate(
        "ecdsa p-384 verify (floor)",
        lambda: public.verify(signature, message, ec.ECDSA(hashes.SHA384())),
        args.seconds,
    )

    iak = serialization.load_pem_public_key((DATA / "psa" / "tfm_iak_public.pem").read_bytes())
    psa_ev = Evidence(tee=TeeType.PSA, data=(DATA / "psa" / "psa-2_0_0_sign1.bin").read_bytes())
    psa_trust = TrustAnchors(keys={TeeType.PSA: (iak,)})
    psa = PsaVerifier()
    _rate(
        "psa (ES256)",
        lambda: psa.verify(psa_ev, trust=psa_trust, collateral=_NoCollateral(), now=NOW),
        args.seconds,
    )

    jwk = json.loads((DATA / "cca" / "cpak-pub.json").read_text())
    cpak = ec.EllipticCurvePublicNumbers(_b64(jwk["x"]), _b64(jwk["y"]), ec.SECP384R1())
    cca_ev = Evidence(tee=TeeType.CCA, data=(DATA / "cca" / "cca-example-token.cbor").read_bytes())
    cca_trust = TrustAnchors(keys={TeeType.CCA: (cpak.public_key(),)})
    cca = CcaVerifier()
    _rate(
        "cca (2 x ES384)",
        lambda: cca.verify(cca_ev, trust=cca_trust, collateral=_NoCollateral(), now=NOW),
        args.seconds,
    )


if __name__ == "__main__":
    main()
