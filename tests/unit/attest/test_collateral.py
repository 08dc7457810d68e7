"""Collateral sources: the offline bundle, the validity-aware cache, chains, and the fetchers.

Real collateral: the bundles in tests/data/{sgx,tdx,sev-snp}/collateral (see PROVENANCE.md).
The fetchers talk to a real ``http.server`` on 127.0.0.1 that serves those same files in
the Intel PCS / AMD KDS URL layout; nothing here touches the network.
"""

from __future__ import annotations

import datetime as dt
import http.server
import os
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors
from fedtee.attest.registry import verifier_for
from fedtee.attest.trust import amd, intel
from fedtee.attest.trust.collateral import (
    CachedCollateral,
    ChainedCollateral,
    DirectoryCollateral,
    NoCollateral,
    collateral_source,
    key_parts,
    valid_until,
)
from fedtee.attest.trust.fetch import KdsFetcher, PcsFetcher, crl_der
from fedtee.errors import CollateralError, ConfigError, Reason

DATA = Path(__file__).resolve().parents[2] / "data"
SGX_DIR = DATA / "sgx" / "collateral"
TDX_DIR = DATA / "tdx" / "collateral"
SNP_DIR = DATA / "sev-snp" / "collateral"
SGX_QUOTE = (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes()
SGX_AT = dt.datetime(2025, 3, 20, tzinfo=dt.UTC)
TDX_QUOTE = (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935]  # PROVENANCE.md
TDX_AT = dt.datetime(2023, 7, 1, 1, tzinfo=dt.UTC)
SNP_REPORT = (DATA / "sev-snp" / "attestation.bin").read_bytes()
SNP_AT = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CHIP = (
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e35"
    "9669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
)
VCEK_KEY = f"Milan/{CHIP}/0200000000000544"
INTEL_TRUST = TrustAnchors(roots={TeeType.SGX: intel.anchors(), TeeType.TDX: intel.anchors()})
AMD_TRUST = TrustAnchors(roots={TeeType.SEV_SNP: amd.anchors()})


def reason_of(fn: Callable[[], object]) -> Reason:
    with pytest.raises(CollateralError) as info:
        fn()
    return info.value.reason


class Counting:
    """Wraps a source and counts the documents asked of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def get(self, kind: str, key: str) -> bytes:
        self.calls.append((kind, key))
        data: bytes = self.inner.get(kind, key)
        return data


# --- the offline bundle ---------------------------------------------------------------


def test_real_sgx_quote_verifies_through_the_directory_bundle() -> None:
    verified = verifier_for("sgx").verify(
        Evidence(TeeType.SGX, SGX_QUOTE),
        trust=INTEL_TRUST,
        collateral=DirectoryCollateral(SGX_DIR),
        now=SGX_AT,
    )
    assert verified.tcb_status is TcbStatus.OUT_OF_DATE
    assert verified.claims["fmspc"] == "00606a000000"


def test_real_snp_report_finds_its_vcek_in_the_bundle() -> None:
    verified = verifier_for("sev-snp").verify(
        Evidence(TeeType.SEV_SNP, SNP_REPORT),
        trust=AMD_TRUST,
        collateral=DirectoryCollateral(SNP_DIR),
        now=SNP_AT,
    )
    assert verified.platform_id is not None and verified.platform_id.hex() == CHIP


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("sgx-tcbinfo", "../../etc/passwd"),
        ("sgx-tcbinfo", "/etc/passwd"),
        ("sgx-tcbinfo", "00606A000000"),  # upper case is not the layout's key
        ("sgx-tcbinfo", "00606a000000/"),
        ("snp-vcek", f"Milan/{CHIP}/../0200000000000544"),
        ("snp-vcek", f"milan/{CHIP}/0200000000000544"),
        ("../sgx-tcbinfo", "00606a000000"),
        ("pck-crl", "platform\x00"),
        ("no-such-kind", "default"),
    ],
)
def test_bad_keys_never_become_paths(kind: str, key: str) -> None:
    assert reason_of(lambda: key_parts(kind, key)) is Reason.COLLATERAL_MISSING
    assert reason_of(lambda: DirectoryCollateral(SGX_DIR).get(kind, key)) is (
        Reason.COLLATERAL_MISSING
    )


def test_missing_document_is_collateral_missing() -> None:
    source = DirectoryCollateral(SGX_DIR)
    assert reason_of(lambda: source.get("sgx-tcbinfo", "ffffffffffff")) is (
        Reason.COLLATERAL_MISSING
    )
    assert reason_of(lambda: source.get("pck-crl", "processor")) is Reason.COLLATERAL_MISSING


def test_link_out_of_the_bundle_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"not collateral")
    bundle = tmp_path / "bundle"
    (bundle / "pck-crl").mkdir(parents=True)
    os.symlink(secret, bundle / "pck-crl" / "platform")
    assert reason_of(lambda: DirectoryCollateral(bundle).get("pck-crl", "platform")) is (
        Reason.COLLATERAL_MISSING
    )


def test_oversized_document_is_malformed_before_it_is_read(tmp_path: Path) -> None:
    (tmp_path / "pck-crl").mkdir()
    (tmp_path / "pck-crl" / "platform").write_bytes(bytes(2049))
    source = DirectoryCollateral(tmp_path, max_bytes=2048)
    assert reason_of(lambda: source.get("pck-crl", "platform")) is Reason.COLLATERAL_MALFORMED


def test_a_folder_where_a_document_should_be_is_missing(tmp_path: Path) -> None:
    (tmp_path / "pck-crl" / "platform").mkdir(parents=True)
    assert reason_of(lambda: DirectoryCollateral(tmp_path).get("pck-crl", "platform")) is (
        Reason.COLLATERAL_MISSING
    )


def test_a_bundle_that_does_not_exist_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        DirectoryCollateral(tmp_path / "nope")


def test_validity_of_each_real_document() -> None:
    source = DirectoryCollateral(SGX_DIR)
    until = {
        kind: valid_until(kind, source.get(kind, key))
        for kind, key in [
            ("sgx-tcbinfo", "00606a000000"),
            ("sgx-qe-identity", "default"),
            ("pck-crl", "platform"),
            ("root-crl", "intel"),
            ("tcb-signing-chain", "intel"),
        ]
    }
    assert until["sgx-tcbinfo"] == dt.datetime(2025, 4, 11, 20, 36, 57, tzinfo=dt.UTC)
    assert until["pck-crl"] == dt.datetime(2023, 7, 8, 7, 27, 52, tzinfo=dt.UTC)
    assert until["tcb-signing-chain"] == dt.datetime(2025, 5, 21, 10, 50, 10, tzinfo=dt.UTC)
    vcek = DirectoryCollateral(SNP_DIR).get("snp-vcek", VCEK_KEY)
    assert valid_until("snp-vcek", vcek) == dt.datetime(2029, 9, 24, 0, 55, 28, tzinfo=dt.UTC)
    assert valid_until("pck-crl", b"garbage") is None
    assert valid_until("sgx-tcbinfo", b'{"tcbInfo": {"nextUpdate": 3}}') is None


# --- the cache ------------------------------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_memory_cache_serves_a_current_document_once_fetched() -> None:
    inner = Counting(DirectoryCollateral(SGX_DIR))
    cache = CachedCollateral(inner, clock=Clock(SGX_AT))
    first = cache.get("sgx-tcbinfo", "00606a000000")
    assert cache.get("sgx-tcbinfo", "00606a000000") == first
    assert inner.calls == [("sgx-tcbinfo", "00606a000000")]


def test_memory_cache_asks_again_once_the_document_is_stale() -> None:
    clock = Clock(SGX_AT)
    inner = Counting(DirectoryCollateral(SGX_DIR))
    cache = CachedCollateral(inner, clock=clock)
    cache.get("sgx-tcbinfo", "00606a000000")
    clock.now = dt.datetime(2025, 4, 12, tzinfo=dt.UTC)  # after nextUpdate 2025-04-11
    cache.get("sgx-tcbinfo", "00606a000000")
    assert len(inner.calls) == 2


def test_stale_bundle_document_is_read_once_per_retry_period() -> None:
    # The SGX bundle's PCK CRL is past its nextUpdate at the quote's time: the verifier warns
    # about it, and the cache must not re-read it for every verification.
    clock = Clock(SGX_AT)
    inner = Counting(DirectoryCollateral(SGX_DIR))
    cache = CachedCollateral(inner, clock=clock, stale_retry=dt.timedelta(minutes=5))
    for _ in range(3):
        cache.get("pck-crl", "platform")
    assert len(inner.calls) == 1
    clock.now = SGX_AT + dt.timedelta(minutes=6)
    cache.get("pck-crl", "platform")
    assert len(inner.calls) == 2


def test_disk_cache_is_a_bundle_and_survives_the_source(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    CachedCollateral(DirectoryCollateral(TDX_DIR), clock=Clock(TDX_AT), cache_dir=cache_dir).get(
        "tdx-tcbinfo", "50806f000000"
    )
    assert (cache_dir / "tdx-tcbinfo" / "50806f000000").read_bytes() == (
        TDX_DIR / "tdx-tcbinfo" / "50806f000000"
    ).read_bytes()
    # A new cache over a source with nothing reads it back from disk while it is current.
    later = CachedCollateral(NoCollateral(), clock=Clock(TDX_AT), cache_dir=cache_dir)
    assert later.get("tdx-tcbinfo", "50806f000000")
    stale = CachedCollateral(
        NoCollateral(), clock=Clock(dt.datetime(2023, 8, 1, tzinfo=dt.UTC)), cache_dir=cache_dir
    )
    assert reason_of(lambda: stale.get("tdx-tcbinfo", "50806f000000")) is (
        Reason.COLLATERAL_MISSING
    )


def test_disk_cache_keeps_neither_stale_nor_unreadable_documents(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "pck-crl").mkdir(parents=True)
    (bundle / "pck-crl" / "processor").write_bytes(b"not a CRL")
    (bundle / "pck-crl" / "platform").write_bytes((SGX_DIR / "pck-crl" / "platform").read_bytes())
    cache_dir = tmp_path / "cache"
    cache = CachedCollateral(DirectoryCollateral(bundle), clock=Clock(SGX_AT), cache_dir=cache_dir)
    assert cache.get("pck-crl", "processor") == b"not a CRL"  # the verifier will reject it
    cache.get("pck-crl", "platform")  # real, but its nextUpdate (2023-07-08) is past
    assert not (cache_dir / "pck-crl").exists() or list((cache_dir / "pck-crl").iterdir()) == []


def test_chain_takes_the_first_source_that_has_the_document(tmp_path: Path) -> None:
    first = Counting(DirectoryCollateral(SNP_DIR))
    second = Counting(DirectoryCollateral(SGX_DIR))
    chain = ChainedCollateral(first, second)
    assert chain.get("sgx-tcbinfo", "00606a000000")
    assert chain.get("snp-vcek", VCEK_KEY)
    assert second.calls == [("sgx-tcbinfo", "00606a000000")]
    assert reason_of(lambda: chain.get("pck-crl", "processor")) is Reason.COLLATERAL_MISSING


def test_chain_does_not_paper_over_a_malformed_document(tmp_path: Path) -> None:
    (tmp_path / "pck-crl").mkdir()
    (tmp_path / "pck-crl" / "platform").write_bytes(bytes(100))
    chain = ChainedCollateral(
        DirectoryCollateral(tmp_path, max_bytes=10), DirectoryCollateral(SGX_DIR)
    )
    assert reason_of(lambda: chain.get("pck-crl", "platform")) is Reason.COLLATERAL_MALFORMED


# --- fetchers against a local HTTP server -----------------------------------------------


class Service:
    """A loopback stand-in for Intel PCS and AMD KDS serving the real test collateral."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.status: dict[str, int] = {}  # path -> forced HTTP status
        self.hang = threading.Event()  # set: requests get no answer until close()
        self.released = threading.Event()
        self.pck_crl_as_hex = False
        chain = (SGX_DIR / "tcb-signing-chain" / "intel").read_bytes()
        vcek = (DATA / "sev-snp" / "vcek.der").read_bytes()
        self.routes: dict[str, tuple[bytes, dict[str, str]]] = {
            "/sgx/certification/v4/tcb?fmspc=00606a000000": (
                (SGX_DIR / "sgx-tcbinfo" / "00606a000000").read_bytes(),
                {"TCB-Info-Issuer-Chain": urllib.parse.quote(chain)},
            ),
            "/tdx/certification/v4/tcb?fmspc=50806f000000": (
                (TDX_DIR / "tdx-tcbinfo" / "50806f000000").read_bytes(),
                {"TCB-Info-Issuer-Chain": urllib.parse.quote(chain)},
            ),
            "/sgx/certification/v4/qe/identity": (
                (SGX_DIR / "sgx-qe-identity" / "default").read_bytes(),
                {"SGX-Enclave-Identity-Issuer-Chain": urllib.parse.quote(chain)},
            ),
            "/tdx/certification/v4/qe/identity": (
                (TDX_DIR / "tdx-qe-identity" / "default").read_bytes(),
                {"SGX-Enclave-Identity-Issuer-Chain": urllib.parse.quote(chain)},
            ),
            "/sgx/certification/v4/pckcrl?ca=platform&encoding=der": (
                (TDX_DIR / "pck-crl" / "platform").read_bytes(),
                {},
            ),
            # A PCCS answers the root CA CRL hex-encoded.
            "/sgx/certification/v4/rootcacrl": (
                (TDX_DIR / "root-crl" / "intel").read_bytes().hex().encode(),
                {},
            ),
            "/vcek/v1/Milan/" + CHIP + "?blSPL=2&teeSPL=0&snpSPL=5&ucodeSPL=68": (vcek, {}),
            "/big": (bytes(4096), {}),
        }
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                if service.hang.is_set():
                    service.released.wait(5)
                    return
                status = service.status.get(self.path.partition("?")[0])
                found = service.routes.get(self.path)
                if status is None:
                    status = 200 if found else 404
                body, headers = found if found and status == 200 else (b"", {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def service() -> Iterator[Service]:
    svc = Service()
    try:
        yield svc
    finally:
        svc.close()


def test_pcs_fetcher_serves_what_the_verifier_needs(service: Service) -> None:
    pcs = PcsFetcher(service.url)
    assert (
        pcs.get("tdx-tcbinfo", "50806f000000")
        == (TDX_DIR / "tdx-tcbinfo" / "50806f000000").read_bytes()
    )
    assert pcs.get("root-crl", "intel") == (TDX_DIR / "root-crl" / "intel").read_bytes()
    assert (
        pcs.get("tcb-signing-chain", "intel")
        == (SGX_DIR / "tcb-signing-chain" / "intel").read_bytes()
    )
    assert pcs.get("pck-crl", "platform") == (TDX_DIR / "pck-crl" / "platform").read_bytes()


def test_real_tdx_quote_verifies_with_fetched_collateral_then_offline(
    service: Service, tmp_path: Path
) -> None:
    # Arrange: fetch through the cache at the quote's time, then stop the service.
    def stack(url: str | None) -> Any:
        return collateral_source(pcs_url=url, cache_dir=tmp_path / "cache", clock=lambda: TDX_AT)

    evidence = Evidence(TeeType.TDX, TDX_QUOTE)
    online = verifier_for("tdx").verify(
        evidence, trust=INTEL_TRUST, collateral=stack(service.url), now=TDX_AT
    )
    fetched = len(service.requests)
    service.close()
    # Act: a fresh cache over the same folder, with the fetcher pointing at a dead port.
    offline = verifier_for("tdx").verify(
        evidence, trust=INTEL_TRUST, collateral=stack(service.url), now=TDX_AT
    )
    # Assert: the same outcome (no matching TCB level), and every document came from disk.
    assert online.tcb_status is offline.tcb_status is TcbStatus.UNSUPPORTED
    assert fetched >= 5
    assert len(service.requests) == fetched
    assert DirectoryCollateral(tmp_path / "cache").get("tdx-qe-identity", "default")


def test_kds_fetcher_gets_the_vcek_for_a_bare_report(service: Service) -> None:
    verified = verifier_for("sev-snp").verify(
        Evidence(TeeType.SEV_SNP, SNP_REPORT),
        trust=AMD_TRUST,
        collateral=collateral_source(kds_url=service.url, clock=lambda: SNP_AT),
        now=SNP_AT,
    )
    assert verified.platform_id is not None and verified.platform_id.hex() == CHIP
    assert service.requests[0].startswith(f"/vcek/v1/Milan/{CHIP}?blSPL=2&teeSPL=0")


def test_not_found_is_missing_so_optional_crls_are_skipped(service: Service) -> None:
    # The SNP verifier treats a missing CRL as "not checked"; a 404 must read the same.
    kds = KdsFetcher(service.url)
    assert reason_of(lambda: kds.get("snp-crl", "Milan")) is Reason.COLLATERAL_MISSING


def test_server_errors_and_dead_services_are_fetch_failures(service: Service) -> None:
    service.status["/vcek/v1/Milan/crl"] = 503
    assert reason_of(lambda: KdsFetcher(service.url).get("snp-crl", "Milan")) is (
        Reason.COLLATERAL_FETCH_FAILED
    )
    service.hang.set()
    slow = PcsFetcher(service.url, timeout_s=0.2)
    assert reason_of(lambda: slow.get("sgx-qe-identity", "default")) is (
        Reason.COLLATERAL_FETCH_FAILED
    )
    service.close()
    assert reason_of(lambda: PcsFetcher(service.url).get("sgx-qe-identity", "default")) is (
        Reason.COLLATERAL_FETCH_FAILED
    )


def test_oversized_answer_is_malformed(service: Service) -> None:
    fetcher = KdsFetcher(service.url, max_bytes=1024)
    assert reason_of(lambda: fetcher.fetch(service.url + "/big", "snp-crl", "Milan")) is (
        Reason.COLLATERAL_MALFORMED
    )


def test_fetchers_never_build_a_url_from_a_bad_key(service: Service) -> None:
    for fetcher in (PcsFetcher(service.url), KdsFetcher(service.url)):
        assert reason_of(lambda f=fetcher: f.get("sgx-tcbinfo", "../../x")) is (  # type: ignore[misc]
            Reason.COLLATERAL_MISSING
        )
    assert service.requests == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://x", "127.0.0.1:8080", "https://pcs/?a=b", ""]
)
def test_only_plain_http_base_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError):
        PcsFetcher(url)


def test_crl_der_accepts_der_pem_and_hex() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    der = (SGX_DIR / "pck-crl" / "platform").read_bytes()
    pem = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    assert crl_der(der, "t") == crl_der(pem, "t") == crl_der(der.hex().encode(), "t") == der
