"""server.toml's collateral settings: the offline bundle, the optional fetchers, the cache.

The real SGX quote is verified through the source the server builds from its config; the
fetcher case uses a loopback ``http.server`` (no network).
"""

from __future__ import annotations

import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fedtee.attest.model import Evidence, TcbStatus, TeeType, TrustAnchors
from fedtee.attest.registry import verifier_for
from fedtee.attest.trust import intel
from fedtee.cli.server import _collateral, parse_server_config
from fedtee.errors import CollateralError, ConfigError, Reason

DATA = Path(__file__).resolve().parents[2] / "data"
BASE = (
    '[federation]\nid="f"\nmodel="m:T"\n[server]\naddress="h:1"\ntls_cert="c"\ntls_key="k"\n'
    '[attestation]\npolicy="p"\n'
)


def config(extra: str, base_dir: Path) -> Any:
    return parse_server_config(BASE + extra, base_dir=base_dir)


def test_no_collateral_settings_mean_no_source(tmp_path: Path) -> None:
    cfg = config("", tmp_path)
    assert (cfg.collateral_dir, cfg.pcs_url, cfg.kds_url, cfg.collateral_cache_dir) == (
        None,
        None,
        None,
        None,
    )
    assert _collateral(cfg) is None


def test_bundle_from_server_toml_verifies_the_real_sgx_quote() -> None:
    cfg = config('collateral_dir = "sgx/collateral"\n', DATA)
    source = _collateral(cfg)
    assert source is not None
    verified = verifier_for("sgx").verify(
        Evidence(TeeType.SGX, (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes()),
        trust=TrustAnchors(roots={TeeType.SGX: intel.anchors()}),
        collateral=source,
        now=dt.datetime(2025, 3, 20, tzinfo=dt.UTC),
    )
    assert verified.tcb_status is TcbStatus.OUT_OF_DATE


@pytest.mark.parametrize(
    "extra",
    [
        'pcs_url = "file:///etc"\n',
        'kds_url = "kdsintf.amd.com"\n',
        "pcs_url = 3\n",
        'pcs_url = "https://pcs.example/?key=1"\n',
    ],
)
def test_bad_fetcher_urls_are_config_errors(extra: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        config(extra, tmp_path)


class _Kds(http.server.BaseHTTPRequestHandler):
    vcek = (DATA / "sev-snp" / "vcek.der").read_bytes()
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).seen.append(self.path)
        found = self.path.startswith("/vcek/v1/Milan/3ac3fe21")
        self.send_response(200 if found else 404)
        body = self.vcek if found else b""
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def kds() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Kds)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_kds_url_and_cache_dir_fetch_once_into_a_bundle(kds: str, tmp_path: Path) -> None:
    # Arrange: the bundle has no VCEK for this key; the configured KDS has it.
    (tmp_path / "bundle").mkdir()
    cfg = config(
        f'collateral_dir = "bundle"\nkds_url = "{kds}"\ncollateral_cache_dir = "cache"\n',
        tmp_path,
    )
    source = _collateral(cfg)
    assert source is not None
    chip = "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b7"
    key = f"Milan/{chip}6a1936776b564ea464cdce40c05f63c9b610c5068b006b5d/0200000000000544"
    _Kds.seen.clear()
    # Act
    first = source.get("snp-vcek", key)
    again = source.get("snp-vcek", key)
    # Assert: fetched once, kept in the cache folder in the bundle layout.
    assert first == again == _Kds.vcek
    assert len(_Kds.seen) == 1
    assert (tmp_path / "cache" / "snp-vcek" / key).read_bytes() == _Kds.vcek
    with pytest.raises(CollateralError) as info:
        source.get("snp-crl", "Milan")  # the KDS answers 404
    assert info.value.reason is Reason.COLLATERAL_MISSING
