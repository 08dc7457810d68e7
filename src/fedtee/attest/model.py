"""The verifier library's shared vocabulary: evidence in, verified evidence out.

Three steps, three types (see DESIGN.md "Verify, then appraise"):

1. **parse**: ``bytes -> <TEE-specific frozen record>`` (in ``fedtee.attest.evidence``),
   no crypto, no I/O, raises only :class:`~fedtee.errors.EvidenceFormatError`.
2. **verify**: :class:`Evidence` + :class:`TrustAnchors` + :class:`CollateralSource` + ``now``
   -> :class:`VerifiedEvidence` (in ``fedtee.attest.verify``). Checks signatures, chains to
   vendor roots, CRLs and collateral validity at ``now``. Raises
   :class:`~fedtee.errors.VerificationError` / :class:`~fedtee.errors.CollateralError`.
3. **appraise**: :class:`VerifiedEvidence` + policy -> attestation result
   (``fedtee.attest.policy``). Only a :class:`VerifiedEvidence` can be appraised, and only
   verifiers can build one (they pass the private ``_SEAL``).

This module imports nothing from the server, client or wire layers, and never will.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from fedtee.errors import EvidenceFormatError, Reason

# Upper bounds applied before anything is read. Real evidence is far smaller:
# an SGX/TDX quote with its PCK chain is ~5 KiB, an SNP report 1184 bytes plus a ~4 KiB
# certificate table, a TPM quote with 24 PCRs and an EK certificate ~4 KiB.
MAX_EVIDENCE_BYTES = 64 * 1024
MAX_AUX_ITEMS = 16
MAX_AUX_BYTES = 256 * 1024


class TeeType(StrEnum):
    SGX = "sgx"
    TDX = "tdx"
    SEV_SNP = "sev-snp"
    TPM = "tpm"
    PSA = "psa"
    CCA = "cca"
    SIM = "sim"

    @classmethod
    def parse(cls, value: str) -> TeeType:
        try:
            return cls(value)
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise EvidenceFormatError(
                f"unknown evidence type {value!r}; known types: {known}",
                reason=Reason.EVIDENCE_TYPE_UNKNOWN,
            ) from None


class TcbStatus(StrEnum):
    """Platform TCB status, ordered from best to worst by :data:`TCB_STATUS_RANK`.

    Vocabulary from Intel's TCB info; other TEEs map onto it (SNP: UpToDate when the VCEK
    TCB matches the reported TCB; TPM / PSA / CCA / sim: NOT_APPLICABLE).
    """

    UP_TO_DATE = "UpToDate"
    SW_HARDENING_NEEDED = "SWHardeningNeeded"
    CONFIGURATION_NEEDED = "ConfigurationNeeded"
    CONFIGURATION_AND_SW_HARDENING_NEEDED = "ConfigurationAndSWHardeningNeeded"
    OUT_OF_DATE = "OutOfDate"
    OUT_OF_DATE_CONFIGURATION_NEEDED = "OutOfDateConfigurationNeeded"
    REVOKED = "Revoked"
    UNSUPPORTED = "Unsupported"  # no matching TCB level in the collateral
    NOT_APPLICABLE = "NotApplicable"


TCB_STATUS_RANK: Mapping[TcbStatus, int] = MappingProxyType(
    {
        TcbStatus.NOT_APPLICABLE: 0,
        TcbStatus.UP_TO_DATE: 0,
        TcbStatus.SW_HARDENING_NEEDED: 1,
        TcbStatus.CONFIGURATION_NEEDED: 2,
        TcbStatus.CONFIGURATION_AND_SW_HARDENING_NEEDED: 3,
        TcbStatus.OUT_OF_DATE: 4,
        TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED: 5,
        TcbStatus.REVOKED: 100,
        TcbStatus.UNSUPPORTED: 100,
    }
)


@dataclass(frozen=True)
class Evidence:
    """What an attester hands over: one primary blob plus named auxiliary blobs.

    ``data`` is the TEE's native evidence (an SGX/TDX quote, an SNP report, a TPM TPMS_ATTEST,
    a COSE token, a sim report). ``aux`` carries what the verifier needs besides: for example
    ``"certs"`` (SNP certificate table / VCEK), ``"signature"``, ``"pcrs"``, ``"ak_public"``,
    ``"ek_cert"`` (TPM). Each backend documents the aux names it reads and rejects others.
    """

    tee: TeeType
    data: bytes
    aux: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if len(self.data) > MAX_EVIDENCE_BYTES:
            raise EvidenceFormatError(
                f"evidence is {len(self.data)} bytes; the limit is {MAX_EVIDENCE_BYTES}",
                reason=Reason.EVIDENCE_TOO_LARGE,
            )
        if len(self.aux) > MAX_AUX_ITEMS:
            raise EvidenceFormatError(
                f"evidence has {len(self.aux)} auxiliary items; the limit is {MAX_AUX_ITEMS}",
                reason=Reason.EVIDENCE_TOO_LARGE,
            )
        total = sum(len(v) for v in self.aux.values())
        if total > MAX_AUX_BYTES:
            raise EvidenceFormatError(
                f"auxiliary evidence is {total} bytes; the limit is {MAX_AUX_BYTES}",
                reason=Reason.EVIDENCE_TOO_LARGE,
            )
        object.__setattr__(self, "aux", MappingProxyType(dict(self.aux)))


class _Seal:
    """Only verifiers hold this; it makes 'appraise unverified evidence' a visible mistake."""

    __slots__ = ()


_SEAL = _Seal()


@dataclass(frozen=True, kw_only=True)
class VerifiedEvidence:
    """Evidence whose signatures, chains and collateral were checked at ``verified_at``.

    Fields are normalised across TEEs so one policy engine can appraise them all:

    - ``report_data``: the user-data field exactly as signed (64 bytes for SGX/TDX/SNP/sim/
      CCA realm challenge, TPM ``extraData``, PSA nonce).
    - ``measurements``: named, reference-comparable values, lower-case names. SGX:
      ``mrenclave``, ``mrsigner``; TDX: ``mrtd``, ``rtmr0``..``rtmr3``, ``mrseam``,
      ``mrconfigid``, ``mrowner``; SNP: ``measurement``, ``host_data``; TPM: ``pcr0``..
      (SHA-256 bank); PSA/CCA: ``sw:<type>`` per software component, ``rim``, ``rem0``..;
      sim: ``measurement``.
    - ``svns``: named security version numbers (``isv_svn``, ``guest_svn``, ``tcb.snp``...).
    - ``platform_id``: a stable identity of the hardware (SNP chip_id, SGX/TDX PCK public-key
      hash or PPID, TPM EK public-key hash, PSA instance id, sim platform key hash). Used
      to stop one platform enrolling under several identities.
    - ``code_identity``: the one value that names the code running in the TEE, which
      training receipts repeat: SGX ``mrenclave``; TDX SHA-384(mrtd || rtmr0..3); SNP
      ``measurement``; TPM the value of fedtee's code PCR; PSA SHA-256 over the sorted
      software-component measurements; CCA SHA-512(rim || rem0..3); sim ``measurement``.
    - ``hardware_backed``: False only for ``sim``; every display of a sim result says so.
    - ``claims``: everything parsed, JSON-friendly (bytes as lower-case hex), for display.
    - ``warnings``: non-fatal findings of verification (e.g. stale CRL, advisory IDs).
    """

    tee: TeeType
    report_data: bytes
    measurements: Mapping[str, bytes]
    debug: bool
    platform_id: bytes | None
    code_identity: bytes
    tcb_status: TcbStatus
    svns: Mapping[str, int]
    hardware_backed: bool
    claims: Mapping[str, Any]
    verified_at: datetime
    advisory_ids: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    produced_at: datetime | None = None
    seal: _Seal | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.seal is not _SEAL:
            raise TypeError("VerifiedEvidence can only be built by a verifier")
        if self.verified_at.tzinfo is None:
            raise ValueError("verified_at must be timezone-aware")
        object.__setattr__(self, "measurements", MappingProxyType(dict(self.measurements)))
        object.__setattr__(self, "svns", MappingProxyType(dict(self.svns)))
        object.__setattr__(self, "claims", MappingProxyType(dict(self.claims)))


@dataclass(frozen=True)
class TrustAnchors:
    """Roots of trust, per TEE type, passed explicitly to every verification.

    ``roots``: X.509 root certificates (Intel SGX Root CA, AMD ARKs, TPM EK CAs, sim root).
    ``keys``: raw public keys where the TEE has no X.509 chain (PSA IAK, CCA CPAK).
    ``TrustAnchors.embedded()`` (in ``fedtee.attest.trust``) gives the vendors' real roots
    and never includes a sim root.
    """

    roots: Mapping[TeeType, tuple[Any, ...]] = field(default_factory=dict)
    keys: Mapping[TeeType, tuple[Any, ...]] = field(default_factory=dict)

    def roots_for(self, tee: TeeType) -> tuple[Any, ...]:
        return tuple(self.roots.get(tee, ()))

    def keys_for(self, tee: TeeType) -> tuple[Any, ...]:
        return tuple(self.keys.get(tee, ()))


@runtime_checkable
class CollateralSource(Protocol):
    """Where verifiers get collateral (CRLs, TCB info, QE identity, VCEKs).

    ``kind`` names the document (e.g. ``"sgx-tcbinfo"``, ``"pck-crl"``, ``"snp-vcek"``) and
    ``key`` identifies it (an FMSPC, a CA name, a chip id + TCB). Returns the raw bytes, or
    raises :class:`~fedtee.errors.CollateralError` with ``COLLATERAL_MISSING``. Never touches
    the network unless it is a fetcher the user configured explicitly.
    """

    def get(self, kind: str, key: str) -> bytes: ...


@runtime_checkable
class EvidenceVerifier(Protocol):
    """Step 2 for one TEE type. Pure: no I/O except through ``collateral``."""

    tee: TeeType

    def verify(
        self,
        evidence: Evidence,
        *,
        trust: TrustAnchors,
        collateral: CollateralSource,
        now: datetime,
    ) -> VerifiedEvidence: ...


@runtime_checkable
class Attester(Protocol):
    """Client side: the only code that touches a TEE device.

    ``report_data`` comes from :func:`fedtee.attest.binding.report_data` and is exactly
    ``report_data_size`` bytes. Raises :class:`~fedtee.errors.DeviceError` (naming the device
    path and what to install) when the device is absent.
    """

    tee: TeeType
    report_data_size: int

    def attest(self, report_data: bytes) -> Evidence: ...


__all__ = [
    "MAX_AUX_BYTES",
    "MAX_AUX_ITEMS",
    "MAX_EVIDENCE_BYTES",
    "TCB_STATUS_RANK",
    "Attester",
    "CollateralSource",
    "Evidence",
    "EvidenceVerifier",
    "TcbStatus",
    "TeeType",
    "TrustAnchors",
    "VerifiedEvidence",
]
