"""Optional collateral fetchers: Intel PCS (or a PCCS) and AMD KDS, over HTTP(S).

Off unless configured: a fetcher exists only when an operator gives its base URL
(``pcs_url`` / ``kds_url`` in server.toml, ``--pcs-url`` / ``--kds-url`` for
``fedtee attest verify``). Put one behind :class:`~fedtee.attest.trust.collateral.CachedCollateral`
(``collateral_source`` does) so each document is fetched once per validity period. Fetchers
only fetch: every document is verified by the verifier that asked for it (signature, chain,
dates), exactly as if it had come from an offline bundle.

Each request: ``urllib`` (no extra dependency), ``http`` or ``https`` only, a timeout, and
at most ``max_bytes`` read. HTTP 404 is ``collateral_missing`` (verifiers may skip optional
CRLs); any other failure (connection, timeout, another status) is
``collateral_fetch_failed``; an oversized body is ``collateral_malformed``.

Intel (PCS API v4; a PCCS serves the same paths)::

    sgx-tcbinfo/<fmspc>       GET /sgx/certification/v4/tcb?fmspc=<fmspc>
    tdx-tcbinfo/<fmspc>       GET /tdx/certification/v4/tcb?fmspc=<fmspc>
    sgx-qe-identity/default   GET /sgx/certification/v4/qe/identity
    tdx-qe-identity/default   GET /tdx/certification/v4/qe/identity
    pck-crl/<ca>              GET /sgx/certification/v4/pckcrl?ca=<ca>&encoding=der
    root-crl/intel            GET <root_crl_url>, by default /sgx/certification/v4/rootcacrl
    tcb-signing-chain/intel   the issuer-chain header of the SGX QE identity response

AMD (KDS, https://kdsintf.amd.com)::

    snp-vcek/<P>/<chip>/<tcb> GET /vcek/v1/<P>/<hwid>?blSPL=..&teeSPL=..&snpSPL=..&ucodeSPL=..
                              (Turin: hwid is the first 8 bytes of chip_id, plus fmcSPL)
    snp-crl/<P>               GET /vcek/v1/<P>/crl
    snp-cert-chain/<P>        GET /vcek/v1/<P>/cert_chain
"""

from __future__ import annotations

import binascii
import http.client
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from fedtee.attest.trust.collateral import MAX_COLLATERAL_BYTES, key_parts
from fedtee.errors import CollateralError, ConfigError, EvidenceFormatError, Reason

DEFAULT_TIMEOUT_S: Final = 10.0
PCS_URL: Final = "https://api.trustedservices.intel.com"
KDS_URL: Final = "https://kdsintf.amd.com"
# Intel PCS v4 names the TCB Signing chain in these headers (URL-encoded PEM).
_ISSUER_CHAIN_HEADERS: Final = (
    "SGX-Enclave-Identity-Issuer-Chain",
    "TCB-Info-Issuer-Chain",
    "SGX-TCB-Info-Issuer-Chain",
)
_HEX = re.compile(rb"\s*(?:[0-9a-fA-F]{2})+\s*")


@dataclass(frozen=True)
class Response:
    body: bytes
    headers: Mapping[str, str]


def check_base_url(url: str, what: str) -> str:
    """``http(s)://host[:port][/path]`` without query or fragment; ConfigError otherwise."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{what} must be an http:// or https:// URL, not {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} must not carry a query or fragment: {url!r}")
    return url.rstrip("/")


class HttpFetcher:
    """GET with a timeout and a size bound; the shared part of both fetchers."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = MAX_COLLATERAL_BYTES,
    ) -> None:
        self.base_url = check_base_url(base_url, type(self).__name__)
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def fetch(self, url: str, kind: str, key: str) -> Response:
        what = f"collateral {kind}/{key} from {url}"
        # The scheme is http(s) only: check_base_url vetted base_url and root_crl_url.
        request = urllib.request.Request(url, headers={"User-Agent": "fedtee"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:  # noqa: S310
                declared = resp.headers.get("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                    raise _too_large(what, int(declared), self.max_bytes)
                body = resp.read(self.max_bytes + 1)
                headers = {k: v for k, v in resp.headers.items()}
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise CollateralError(
                    f"{what}: not found (HTTP 404)", reason=Reason.COLLATERAL_MISSING
                ) from exc
            raise _failed(what, f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            raise _failed(what, str(exc)) from exc
        if len(body) > self.max_bytes:
            raise _too_large(what, len(body), self.max_bytes)
        return Response(body=body, headers=headers)

    def url(self, path: str, query: Mapping[str, str] | None = None) -> str:
        tail = f"?{urllib.parse.urlencode(query)}" if query else ""
        return f"{self.base_url}{path}{tail}"


def _failed(what: str, detail: str) -> CollateralError:
    return CollateralError(f"{what}: {detail}", reason=Reason.COLLATERAL_FETCH_FAILED)


def _too_large(what: str, size: int, limit: int) -> CollateralError:
    return CollateralError(
        f"{what}: {size} bytes; the limit is {limit}", reason=Reason.COLLATERAL_MALFORMED
    )


def _not_served(kind: str, key: str, by: str) -> CollateralError:
    return CollateralError(
        f"collateral {kind}/{key}: {by} does not serve it", reason=Reason.COLLATERAL_MISSING
    )


def crl_der(body: bytes, what: str) -> bytes:
    """A CRL as DER, whichever of DER, PEM or hex-encoded DER (PCCS) the service sent."""
    if body.lstrip().startswith(b"-----BEGIN"):
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        try:
            return x509.load_pem_x509_crl(body).public_bytes(Encoding.DER)
        except ValueError as exc:
            raise CollateralError(
                f"{what}: not a PEM CRL", reason=Reason.COLLATERAL_MALFORMED
            ) from exc
    if _HEX.fullmatch(body):
        try:
            return binascii.unhexlify(body.strip())
        except binascii.Error as exc:  # pragma: no cover - the pattern admits only hex pairs
            raise CollateralError(f"{what}: bad hex", reason=Reason.COLLATERAL_MALFORMED) from exc
    return body


class PcsFetcher(HttpFetcher):
    """Intel PCS API v4, or a PCCS at ``base_url`` (see the module docstring for paths)."""

    def __init__(
        self,
        base_url: str,
        *,
        root_crl_url: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = MAX_COLLATERAL_BYTES,
    ) -> None:
        super().__init__(base_url, timeout_s=timeout_s, max_bytes=max_bytes)
        self.root_crl_url = (
            check_base_url(root_crl_url, "root_crl_url")
            if root_crl_url is not None
            else self.url("/sgx/certification/v4/rootcacrl")
        )

    def get(self, kind: str, key: str) -> bytes:
        key_parts(kind, key)  # unknown kinds and malformed keys never reach a URL
        if kind in ("sgx-tcbinfo", "tdx-tcbinfo"):
            tee = kind.partition("-")[0]
            url = self.url(f"/{tee}/certification/v4/tcb", {"fmspc": key})
            return self.fetch(url, kind, key).body
        if kind in ("sgx-qe-identity", "tdx-qe-identity"):
            tee = kind.partition("-")[0]
            return self.fetch(self.url(f"/{tee}/certification/v4/qe/identity"), kind, key).body
        if kind == "pck-crl":
            url = self.url("/sgx/certification/v4/pckcrl", {"ca": key, "encoding": "der"})
            return crl_der(self.fetch(url, kind, key).body, f"{kind}/{key}")
        if kind == "root-crl" and key == "intel":
            return crl_der(self.fetch(self.root_crl_url, kind, key).body, f"{kind}/{key}")
        if kind == "tcb-signing-chain":
            url = self.url("/sgx/certification/v4/qe/identity")
            headers = {k.lower(): v for k, v in self.fetch(url, kind, key).headers.items()}
            for name in _ISSUER_CHAIN_HEADERS:
                value = headers.get(name.lower())
                if value:
                    return urllib.parse.unquote(value).encode()
            raise CollateralError(
                f"{url} sent no issuer-chain header ({', '.join(_ISSUER_CHAIN_HEADERS)})",
                reason=Reason.COLLATERAL_MALFORMED,
            )
        raise _not_served(kind, key, repr(self))


class KdsFetcher(HttpFetcher):
    """AMD Key Distribution Service at ``base_url`` (see the module docstring for paths)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = MAX_COLLATERAL_BYTES,
    ) -> None:
        super().__init__(base_url, timeout_s=timeout_s, max_bytes=max_bytes)

    def get(self, kind: str, key: str) -> bytes:
        parts = key_parts(kind, key)
        if kind == "snp-vcek":
            return self.fetch(self.vcek_url(*parts[1:]), kind, key).body
        if kind == "snp-crl":
            return crl_der(self.fetch(self.url(f"/vcek/v1/{key}/crl"), kind, key).body, key)
        if kind == "snp-cert-chain":
            return self.fetch(self.url(f"/vcek/v1/{key}/cert_chain"), kind, key).body
        raise _not_served(kind, key, repr(self))

    def vcek_url(self, product: str, chip_id_hex: str, tcb_hex: str) -> str:
        """The KDS URL of the VCEK for this chip at this reported TCB."""
        from fedtee.attest.evidence.snp import Product, decode_tcb

        named = Product(product)
        try:
            tcb = decode_tcb(bytes.fromhex(tcb_hex), named)
        except EvidenceFormatError as exc:
            raise CollateralError(str(exc), reason=Reason.COLLATERAL_MISSING) from exc
        query = {
            "blSPL": str(tcb.bootloader),
            "teeSPL": str(tcb.tee),
            "snpSPL": str(tcb.snp),
            "ucodeSPL": str(tcb.microcode),
        }
        hwid = chip_id_hex
        if named is Product.TURIN:
            # Turin VCEKs are per 8-byte hwid and carry the FMC SPL (AMD KDS spec, rev 1.0).
            hwid = chip_id_hex[:16]
            query = {"fmcSPL": str(tcb.fmc), **query}
        return self.url(f"/vcek/v1/{named.value}/{hwid}", query)


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KDS_URL",
    "PCS_URL",
    "HttpFetcher",
    "KdsFetcher",
    "PcsFetcher",
    "Response",
    "check_base_url",
    "crl_der",
]
