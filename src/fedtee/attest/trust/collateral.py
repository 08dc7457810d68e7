"""Collateral sources: an offline bundle directory, a validity-aware cache, a chain of sources.

Verifiers ask a :class:`~fedtee.attest.model.CollateralSource` for documents by
``(kind, key)``. This module gives the sources an operator configures:

- :class:`DirectoryCollateral`: an offline bundle, one file per document at
  ``<dir>/<kind>/<key>`` (``snp-vcek`` keys contain ``/`` and so become sub-folders). No
  network, ever. The default.
- :class:`CachedCollateral`: a memory cache (and optionally a disk cache, in the same
  ``<kind>/<key>`` layout, so a cache directory is itself an offline bundle) in front of any
  source. A cached document is served while it is valid at the cache's clock (nextUpdate of
  TCB info, QE identity and CRLs; notAfter of certificates) and asked for again once it is not.
- :class:`ChainedCollateral`: the first source that has a document wins (e.g. the bundle
  first, then a fetcher). Only ``collateral_missing`` falls through; any other error stops.
- the fetchers in :mod:`fedtee.attest.trust.fetch` (Intel PCS / PCCS, AMD KDS), which are
  used only when an operator names their base URL: :func:`collateral_source` builds the
  whole stack from configuration.

Kinds and keys (every key is checked against its pattern before it is used in a path, so
no key can name a file outside the bundle):

=====================  ===========================================  ===========================
kind                   key                                          content
=====================  ===========================================  ===========================
``sgx-tcbinfo``        FMSPC, 12 lower-case hex digits              Intel TCB info JSON
``tdx-tcbinfo``        FMSPC                                        Intel TCB info JSON (TDX)
``sgx-qe-identity``    ``default``                                  Intel QE identity JSON
``tdx-qe-identity``    ``default``                                  Intel TD_QE identity JSON
``pck-crl``            ``platform`` or ``processor``                DER CRL of the PCK CA
``root-crl``           ``intel`` or a root's SHA-256 (64 hex)       DER CRL of the root CA
``tcb-signing-chain``  ``intel``                                    PEM: TCB Signing cert, root
``snp-vcek``           ``<Product>/<chip_id 128 hex>/<tcb 16 hex>``  DER VCEK certificate
``snp-crl``            ``Milan``, ``Genoa`` or ``Turin``            DER CRL of the ARK/ASK
``snp-cert-chain``     ``Milan``, ``Genoa`` or ``Turin``            PEM: ASK then ARK
``tpm-ek-crl``         SHA-256 hex of the EK CA's public key        DER CRL of an EK CA
=====================  ===========================================  ===========================
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from fedtee.attest.model import CollateralSource
from fedtee.errors import CollateralError, ConfigError, Reason

# Same bound as the DCAP verifier's: real documents are far smaller (a TDX TCB info ~10 KiB,
# a CRL ~1 KiB; AMD's VCEK CRL ~1 KiB).
MAX_COLLATERAL_BYTES: Final = 512 * 1024
MAX_CACHED_ITEMS: Final = 1024
STALE_RETRY: Final = dt.timedelta(minutes=5)

_PRODUCT = r"(?:Milan|Genoa|Turin)"
_FMSPC = r"[0-9a-f]{12}"
KEY_PATTERNS: Mapping[str, re.Pattern[str]] = MappingProxyType(
    {
        "sgx-tcbinfo": re.compile(_FMSPC),
        "tdx-tcbinfo": re.compile(_FMSPC),
        "sgx-qe-identity": re.compile("default"),
        "tdx-qe-identity": re.compile("default"),
        "pck-crl": re.compile("platform|processor"),
        "root-crl": re.compile("intel|[0-9a-f]{64}"),
        "tcb-signing-chain": re.compile("intel"),
        "snp-vcek": re.compile(_PRODUCT + "/[0-9a-f]{128}/[0-9a-f]{16}"),
        "snp-crl": re.compile(_PRODUCT),
        "snp-cert-chain": re.compile(_PRODUCT),
        "tpm-ek-crl": re.compile("[0-9a-f]{64}"),
    }
)


def _missing(kind: str, key: str, detail: str) -> CollateralError:
    return CollateralError(f"collateral {kind}/{key}: {detail}", reason=Reason.COLLATERAL_MISSING)


def key_parts(kind: str, key: str) -> tuple[str, ...]:
    """The path parts of ``(kind, key)`` in a bundle; unknown kinds and bad keys are missing.

    A key is data from evidence (an FMSPC, a chip id), so it is matched in full against its
    kind's pattern before it becomes a path: nothing like ``..`` or an absolute path passes.
    """
    pattern = KEY_PATTERNS.get(kind)
    if pattern is None:
        raise _missing(kind, key, f"unknown kind; known: {', '.join(sorted(KEY_PATTERNS))}")
    if not isinstance(key, str) or pattern.fullmatch(key) is None:
        raise _missing(kind, key, f"the key does not match {pattern.pattern!r}")
    return (kind, *key.split("/"))


class DirectoryCollateral:
    """An offline bundle: ``<root>/<kind>/<key>``, one document per file, read on demand.

    Files larger than ``max_bytes`` are ``collateral_malformed``; a missing file (or one that
    resolves outside the bundle through a link) is ``collateral_missing``. A directory that
    does not exist is a :class:`~fedtee.errors.ConfigError` at construction.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_bytes: int = MAX_COLLATERAL_BYTES):
        path = Path(root)
        if not path.is_dir():
            raise ConfigError(f"collateral directory {path} does not exist or is not a folder")
        self.root = path
        self._resolved = path.resolve()
        self._max_bytes = max_bytes

    def __repr__(self) -> str:
        return f"DirectoryCollateral({str(self.root)!r})"

    def get(self, kind: str, key: str) -> bytes:
        file = self.root.joinpath(*key_parts(kind, key))
        try:
            resolved = file.resolve(strict=True)
        except (OSError, RuntimeError):
            raise _missing(kind, key, f"no file {file}") from None
        if not resolved.is_relative_to(self._resolved):
            raise _missing(kind, key, f"{file} points outside the bundle")
        try:
            with open(resolved, "rb") as fh:
                info = os.fstat(fh.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise _missing(kind, key, f"{file} is not a regular file")
                if info.st_size > self._max_bytes:
                    raise _too_large(kind, key, info.st_size, self._max_bytes)
                data = fh.read(self._max_bytes + 1)
        except OSError as exc:
            raise _missing(kind, key, f"cannot read {file}: {exc}") from exc
        if len(data) > self._max_bytes:
            raise _too_large(kind, key, len(data), self._max_bytes)
        return data


def _too_large(kind: str, key: str, size: int, limit: int) -> CollateralError:
    return CollateralError(
        f"collateral {kind}/{key} is {size} bytes; the limit is {limit}",
        reason=Reason.COLLATERAL_MALFORMED,
    )


# --- validity of a document, for caching --------------------------------------------------


def _json_next_update(data: bytes) -> dt.datetime | None:
    doc = json.loads(data)
    body = next((doc[k] for k in ("tcbInfo", "enclaveIdentity") if k in doc), None)
    if not isinstance(body, dict) or not isinstance(body.get("nextUpdate"), str):
        return None
    return dt.datetime.fromisoformat(body["nextUpdate"].replace("Z", "+00:00"))


def _crl_next_update(data: bytes) -> dt.datetime | None:
    from cryptography import x509

    crl = (
        x509.load_pem_x509_crl(data)
        if data.lstrip().startswith(b"-----")
        else x509.load_der_x509_crl(data)
    )
    return crl.next_update_utc


def _certs_not_after(data: bytes) -> dt.datetime | None:
    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning

    with warnings.catch_warnings():
        # AMD KDS VCEKs have serial number 0; only the dates are read here.
        warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
        certs = (
            x509.load_pem_x509_certificates(data)
            if data.lstrip().startswith(b"-----")
            else [x509.load_der_x509_certificate(data)]
        )
    return min(c.not_valid_after_utc for c in certs)


_EXPIRY: Mapping[str, Callable[[bytes], dt.datetime | None]] = MappingProxyType(
    {
        "sgx-tcbinfo": _json_next_update,
        "tdx-tcbinfo": _json_next_update,
        "sgx-qe-identity": _json_next_update,
        "tdx-qe-identity": _json_next_update,
        "pck-crl": _crl_next_update,
        "root-crl": _crl_next_update,
        "snp-crl": _crl_next_update,
        "tpm-ek-crl": _crl_next_update,
        "tcb-signing-chain": _certs_not_after,
        "snp-vcek": _certs_not_after,
        "snp-cert-chain": _certs_not_after,
    }
)


def valid_until(kind: str, data: bytes) -> dt.datetime | None:
    """When a document stops being current: nextUpdate (TCB info, QE identity, CRLs) or the
    earliest notAfter (certificates). None when it cannot be read: such a document is never
    written to a disk cache (the verifier will say what is wrong with it)."""
    reader = _EXPIRY.get(kind)
    if reader is None:
        return None
    from cryptography import x509

    try:
        until = reader(data)
    # InvalidVersion is not a ValueError.
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, x509.InvalidVersion):
        return None
    if until is None or until.tzinfo is None:
        return None
    return until


@dataclass(frozen=True)
class _Entry:
    data: bytes
    until: dt.datetime | None
    fetched_at: dt.datetime | None = None

    def current(self, now: dt.datetime) -> bool:
        return self.until is None or now < self.until

    def resting(self, now: dt.datetime, retry: dt.timedelta) -> bool:
        """A stale document the source just gave: not asked for again for ``retry``."""
        return self.fetched_at is not None and self.fetched_at <= now < self.fetched_at + retry


class CachedCollateral:
    """A cache in front of ``source``, checked against ``clock()`` on every use.

    Memory first, then (when ``cache_dir`` is given) the disk, then ``source``. A document is
    served from a cache only while it is current at ``clock()`` (:func:`valid_until`);
    otherwise the source is asked again. A document that is already stale when the source
    gives it (an offline bundle's old CRL) is kept in memory and the source is asked again
    only after ``stale_retry``, so a stale bundle costs one read per period, not one per
    verification; the verifier still sees that it is stale and says so. Documents are
    written to ``cache_dir`` atomically (temporary file, then rename), only when current and
    readable, in the bundle layout. The memory cache holds at most ``max_items`` documents
    (a full cache is emptied).
    """

    def __init__(
        self,
        source: CollateralSource,
        *,
        clock: Callable[[], dt.datetime],
        cache_dir: str | os.PathLike[str] | None = None,
        max_items: int = MAX_CACHED_ITEMS,
        stale_retry: dt.timedelta = STALE_RETRY,
    ) -> None:
        self._source = source
        self._clock = clock
        self._stale_retry = stale_retry
        self._max_items = max_items
        self._memory: dict[tuple[str, str], _Entry] = {}
        self._dir: Path | None = None
        self._disk: DirectoryCollateral | None = None
        if cache_dir is not None:
            self._dir = Path(cache_dir)
            try:
                self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cannot create collateral cache {self._dir}: {exc}") from exc
            self._disk = DirectoryCollateral(self._dir)

    def get(self, kind: str, key: str) -> bytes:
        now = self._clock()
        entry = self._memory.get((kind, key))
        if entry is not None and (entry.current(now) or entry.resting(now, self._stale_retry)):
            return entry.data
        if self._disk is not None:
            try:
                data = self._disk.get(kind, key)
            except CollateralError:
                pass
            else:
                cached = _Entry(data, valid_until(kind, data))
                if cached.until is not None and cached.current(now):
                    self._remember(kind, key, cached)
                    return data
        data = self._source.get(kind, key)
        fresh = _Entry(data, valid_until(kind, data), fetched_at=now)
        self._remember(kind, key, fresh)
        if self._dir is not None and fresh.until is not None and fresh.current(now):
            self._write(kind, key, data)
        return data

    def _remember(self, kind: str, key: str, entry: _Entry) -> None:
        if len(self._memory) >= self._max_items:
            self._memory.clear()
        self._memory[(kind, key)] = entry

    def _write(self, kind: str, key: str, data: bytes) -> None:
        assert self._dir is not None
        target = self._dir.joinpath(*key_parts(kind, key))
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            # A cache that cannot be written only costs a later fetch; the document is good.
            return


class ChainedCollateral:
    """Ask each source in turn; the first that has the document wins.

    Only ``collateral_missing`` moves on to the next source: a malformed file in the bundle
    or a failed fetch is reported, never papered over by another source.
    """

    def __init__(self, *sources: CollateralSource) -> None:
        if not sources:
            raise ValueError("ChainedCollateral needs at least one source")
        self.sources = sources

    def get(self, kind: str, key: str) -> bytes:
        for source in self.sources:
            try:
                return source.get(kind, key)
            except CollateralError as exc:
                if exc.reason is not Reason.COLLATERAL_MISSING:
                    raise
        tried = ", ".join(repr(s) for s in self.sources)
        raise _missing(kind, key, f"in none of {tried}")


class NoCollateral:
    """A source with no documents: every ``get`` is ``collateral_missing``."""

    def __repr__(self) -> str:
        return "NoCollateral()"

    def get(self, kind: str, key: str) -> bytes:
        raise _missing(kind, key, "no collateral source is configured")


def collateral_source(
    *,
    directory: str | os.PathLike[str] | None = None,
    pcs_url: str | None = None,
    kds_url: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    clock: Callable[[], dt.datetime],
    timeout_s: float = 10.0,
) -> CollateralSource:
    """The source an operator configured: the bundle first, then the fetchers, all cached.

    With neither a directory nor a fetcher URL the result has no documents (TEEs without
    collateral, PSA / CCA / TPM / sim, still verify). Fetchers exist only when their base URL
    is given: fedtee never reaches the network on its own.
    """
    sources: list[CollateralSource] = []
    if directory is not None:
        sources.append(DirectoryCollateral(directory))
    if pcs_url is not None or kds_url is not None:
        from fedtee.attest.trust import fetch

        if pcs_url is not None:
            sources.append(fetch.PcsFetcher(pcs_url, timeout_s=timeout_s))
        if kds_url is not None:
            sources.append(fetch.KdsFetcher(kds_url, timeout_s=timeout_s))
    if not sources:
        return NoCollateral()
    inner = sources[0] if len(sources) == 1 else ChainedCollateral(*sources)
    return CachedCollateral(inner, clock=clock, cache_dir=cache_dir)


__all__ = [
    "KEY_PATTERNS",
    "MAX_COLLATERAL_BYTES",
    "STALE_RETRY",
    "CachedCollateral",
    "ChainedCollateral",
    "DirectoryCollateral",
    "NoCollateral",
    "collateral_source",
    "key_parts",
    "valid_until",
]
