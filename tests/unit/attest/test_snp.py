"""AMD SEV-SNP: report parser, certificate table, VCEK -> ASK -> ARK chain, TCB binding.

Real evidence: the Milan report and VCEK in tests/data/sev-snp (see PROVENANCE.md), verified
at the expected.json's ``valid_at``. Negative cases use fedtee.attest.testing.snp's fake chain
with a fixed ``now``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.attest.evidence import snp as ev
from fedtee.attest.model import (
    CollateralSource,
    Evidence,
    TcbStatus,
    TeeType,
    TrustAnchors,
    VerifiedEvidence,
)
from fedtee.attest.registry import verifier_for
from fedtee.attest.testing.snp import FakeAmdChain, build_report
from fedtee.attest.trust import amd
from fedtee.attest.verify.snp import SnpVerifier
from fedtee.errors import AttestationError, CollateralError, EvidenceFormatError, Reason

DATA = Path(__file__).parents[2] / "data" / "sev-snp"
EXPECTED = json.loads((DATA / "expected.json").read_text())
REPORT = (DATA / "attestation.bin").read_bytes()
VCEK = (DATA / "vcek.der").read_bytes()
REAL_NOW = datetime(2024, 1, 1, tzinfo=UTC)
FAKE_NOW = datetime(2030, 6, 1, tzinfo=UTC)


class DictCollateral:
    def __init__(self, items: Mapping[tuple[str, str], bytes] | None = None) -> None:
        self.items = dict(items or {})
        self.asked: list[tuple[str, str]] = []

    def get(self, kind: str, key: str) -> bytes:
        self.asked.append((kind, key))
        try:
            return self.items[(kind, key)]
        except KeyError:
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING) from None


class DirCollateral:
    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, kind: str, key: str) -> bytes:
        path = self.root / kind / key
        if not path.is_file():
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)
        return path.read_bytes()


AMD_TRUST = TrustAnchors(roots={TeeType.SEV_SNP: amd.anchors()})


def _real(aux: Mapping[str, bytes] | None = None, data: bytes = REPORT) -> Evidence:
    return Evidence(
        tee=TeeType.SEV_SNP, data=data, aux=dict(aux if aux is not None else {"vcek": VCEK})
    )


def _verify(
    evidence: Evidence,
    *,
    trust: TrustAnchors = AMD_TRUST,
    collateral: CollateralSource | None = None,
    now: datetime = REAL_NOW,
) -> VerifiedEvidence:
    source = collateral if collateral is not None else DictCollateral()
    return SnpVerifier().verify(evidence, trust=trust, collateral=source, now=now)


def _reason(fn: object, *args: object, **kwargs: object) -> Reason:
    with pytest.raises(AttestationError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.reason


# --- the real vector ------------------------------------------------------------------------


def test_real_report_verifies_with_expected_claims() -> None:
    verified = verifier_for("sev-snp").verify(
        _real(), trust=AMD_TRUST, collateral=DictCollateral(), now=REAL_NOW
    )
    assert verified.tee is TeeType.SEV_SNP
    assert verified.report_data.hex() == EXPECTED["report_data"]
    assert verified.measurements["measurement"].hex() == EXPECTED["measurement"]
    assert verified.measurements["host_data"].hex() == EXPECTED["host_data"]
    assert verified.code_identity.hex() == EXPECTED["measurement"]
    assert verified.platform_id is not None and verified.platform_id.hex() == EXPECTED["chip_id"]
    assert verified.debug is EXPECTED["policy_debug_allowed"] is True
    assert verified.tcb_status is TcbStatus.UP_TO_DATE
    assert verified.hardware_backed is True
    parts = EXPECTED["reported_tcb_parts"]
    assert verified.svns == {
        "guest_svn": EXPECTED["guest_svn"],
        **{f"tcb.{k}": v for k, v in parts.items()},
    }
    claims = verified.claims
    assert claims["version"] == EXPECTED["report_version"]
    assert claims["policy"]["raw"] == EXPECTED["policy"]
    assert claims["vmpl"] == EXPECTED["vmpl"]
    assert claims["reported_tcb"]["raw"] == EXPECTED["reported_tcb"]
    assert claims["current_tcb"]["raw"] == EXPECTED["current_tcb"]
    assert claims["platform_info"]["raw"] == EXPECTED["platform_info"]
    assert claims["vcek"]["product_name"] == "Milan-B0"
    assert "ARK-Milan" in claims["ark"]
    json.dumps(dict(claims))


def test_real_report_verifies_with_vcek_from_offline_bundle() -> None:
    bundle = DirCollateral(DATA / "collateral")
    verified = _verify(_real(aux={}), collateral=bundle)
    assert verified.measurements["measurement"].hex() == EXPECTED["measurement"]


def test_real_report_in_certificate_table_with_real_ask_and_ark() -> None:
    ask, ark = amd.chain("milan")
    from cryptography.hazmat.primitives.serialization import Encoding

    table = ev.build_cert_table(
        {"vcek": VCEK, "ask": ask.public_bytes(Encoding.DER), "ark": ark.public_bytes(Encoding.DER)}
    )
    verified = _verify(_real(aux={"certs": table}))
    assert verified.claims["vcek"]["product_name"] == "Milan-B0"


def test_missing_vcek_everywhere_is_collateral_missing() -> None:
    coll = DictCollateral()
    assert _reason(_verify, _real(aux={}), collateral=coll) is Reason.COLLATERAL_MISSING
    # v2 report: product unknown, so every product's key was tried.
    assert {k.split("/")[0] for _, k in coll.asked} == {"Milan", "Genoa", "Turin"}


def test_real_report_after_vcek_expiry_is_cert_expired() -> None:
    late = datetime(2030, 1, 1, tzinfo=UTC)
    assert _reason(_verify, _real(), now=late) is Reason.CERT_EXPIRED


def test_real_report_before_vcek_issue_is_not_yet_valid() -> None:
    early = datetime(2022, 1, 1, tzinfo=UTC)
    assert _reason(_verify, _real(), now=early) is Reason.CERT_NOT_YET_VALID


@pytest.mark.parametrize(
    "offset",
    [0x004, 0x008, 0x050, 0x090, 0x0C0, 0x0E0, 0x140, 0x180 + 7, 0x1A0, 0x1E0, 0x1F0],
)
def test_flipped_bit_in_signed_region_is_rejected(offset: int) -> None:
    mutated = bytearray(REPORT)
    mutated[offset] ^= 0x01 if offset != 0x008 else 0x40  # 0x008: a policy bit that parses
    reason = _reason(_verify, _real(data=bytes(mutated)))
    expected = Reason.TCB_MISMATCH if offset in (0x180 + 7, 0x1A0) else Reason.SIGNATURE_INVALID
    assert reason is expected


def test_flipped_bit_in_signature_is_rejected() -> None:
    mutated = bytearray(REPORT)
    mutated[0x2A0] ^= 0x01
    assert _reason(_verify, _real(data=bytes(mutated))) is Reason.SIGNATURE_INVALID


def test_truncated_and_extended_reports_are_rejected() -> None:
    assert _reason(_verify, _real(data=REPORT[:-1])) is Reason.EVIDENCE_TRUNCATED
    assert _reason(_verify, _real(data=REPORT + b"\0")) is Reason.EVIDENCE_TRAILING_DATA


@pytest.mark.parametrize("version", [0, 1, 6, 0xFFFFFFFF])
def test_wrong_version_is_rejected(version: int) -> None:
    mutated = version.to_bytes(4, "little") + REPORT[4:]
    assert _reason(_verify, _real(data=mutated)) is Reason.EVIDENCE_VERSION_UNSUPPORTED


def test_nonzero_reserved_and_bad_algo_are_field_invalid() -> None:
    for offset in (0x04C, 0x19F, 0x208, 0x49F, 0x188):  # 0x188 is CPUID, reserved in v2
        mutated = bytearray(REPORT)
        mutated[offset] = 1
        assert _reason(ev.parse_report, bytes(mutated)) is Reason.EVIDENCE_FIELD_INVALID
    algo = bytearray(REPORT)
    algo[0x034] = 2
    assert _reason(ev.parse_report, bytes(algo)) is Reason.EVIDENCE_FIELD_INVALID


def test_untrusted_root_is_rejected() -> None:
    only_genoa = TrustAnchors(roots={TeeType.SEV_SNP: (amd.chain("genoa")[1],)})
    assert _reason(_verify, _real(), trust=only_genoa) is Reason.CHAIN_UNTRUSTED_ROOT
    assert _reason(_verify, _real(), trust=TrustAnchors()) is Reason.CHAIN_UNTRUSTED_ROOT


def test_unknown_aux_name_is_rejected() -> None:
    assert (
        _reason(_verify, _real(aux={"vcek": VCEK, "extra": b"x"})) is Reason.EVIDENCE_FIELD_INVALID
    )


def test_garbage_vcek_is_cert_malformed() -> None:
    assert _reason(_verify, _real(aux={"vcek": b"\x30\x03junk"})) is Reason.CERT_MALFORMED


def test_describe_and_evidence_from_files() -> None:
    evidence = ev.evidence_from_files(REPORT, {"vcek": VCEK})
    shown = ev.describe(evidence)
    assert shown["tee"] == "sev-snp"
    assert shown["chip_id"] == EXPECTED["chip_id"]
    assert shown["policy"]["debug"] is True
    json.dumps(shown)
    assert _reason(ev.evidence_from_files, REPORT[:100], {}) is Reason.EVIDENCE_TRUNCATED


# --- fake chains ----------------------------------------------------------------------------

_KEYS: list[tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]] = []


def _keys() -> tuple[rsa.RSAPrivateKey, rsa.RSAPrivateKey]:
    if not _KEYS:  # RSA key generation is the slow part: do it once per test session
        _KEYS.append(
            (
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
            )
        )
    return _KEYS[0]


def _fake(**kwargs: object) -> FakeAmdChain:
    return FakeAmdChain.generate(now=FAKE_NOW, keys=_keys(), **kwargs)  # type: ignore[arg-type]


def _fake_trust(chain: FakeAmdChain) -> TrustAnchors:
    return TrustAnchors(roots={TeeType.SEV_SNP: (chain.ark,)})


def _fake_evidence(chain: FakeAmdChain, report: bytes | None = None, **table: bool) -> Evidence:
    signed = chain.sign(report if report is not None else build_report())
    return Evidence(tee=TeeType.SEV_SNP, data=signed, aux={"certs": chain.cert_table(**table)})


def test_fake_chain_verifies() -> None:
    chain = _fake()
    verified = _verify(_fake_evidence(chain), trust=_fake_trust(chain), now=FAKE_NOW)
    assert verified.debug is False
    assert verified.svns["guest_svn"] == 1


def test_fake_v3_turin_report_uses_turin_tcb_layout() -> None:
    tcb = bytes([3, 4, 5, 6, 0, 0, 0, 70])  # fmc, bootloader, tee, snp, reserved, microcode
    chain = _fake(
        product="Turin", tcb={"fmc": 3, "bootloader": 4, "tee": 5, "snp": 6, "microcode": 70}
    )
    report = build_report(version=3, reported_tcb=tcb, cpuid=(0x1A, 0x02, 0x00))
    verified = _verify(_fake_evidence(chain, report), trust=_fake_trust(chain), now=FAKE_NOW)
    assert verified.svns == {
        "guest_svn": 1,
        "tcb.fmc": 3,
        "tcb.bootloader": 4,
        "tcb.tee": 5,
        "tcb.snp": 6,
        "tcb.microcode": 70,
    }


def test_fake_chain_another_ark_in_table_is_untrusted() -> None:
    chain = _fake()
    other = FakeAmdChain.generate(now=FAKE_NOW)
    evidence = _fake_evidence(chain)
    assert _reason(_verify, evidence, trust=_fake_trust(other), now=FAKE_NOW) is (
        Reason.CHAIN_UNTRUSTED_ROOT
    )
    # without an ARK in the table the ASK still fails to chain to the other root
    evidence = _fake_evidence(chain, with_ark=False)
    assert _reason(_verify, evidence, trust=_fake_trust(other), now=FAKE_NOW) is (
        Reason.CHAIN_UNTRUSTED_ROOT
    )


def test_fake_chain_expired_vcek() -> None:
    chain = _fake(vcek_not_after=FAKE_NOW - timedelta(days=1))
    assert _reason(_verify, _fake_evidence(chain), trust=_fake_trust(chain), now=FAKE_NOW) is (
        Reason.CERT_EXPIRED
    )


def test_fake_chain_tcb_mismatch() -> None:
    chain = _fake(tcb={"bootloader": 2, "tee": 0, "snp": 4, "microcode": 68})
    assert _reason(_verify, _fake_evidence(chain), trust=_fake_trust(chain), now=FAKE_NOW) is (
        Reason.TCB_MISMATCH
    )


def test_fake_chain_hwid_mismatch() -> None:
    chain = _fake(hwid=bytes(64))
    assert _reason(_verify, _fake_evidence(chain), trust=_fake_trust(chain), now=FAKE_NOW) is (
        Reason.TCB_MISMATCH
    )


def test_fake_chain_revoked_ask_via_crl() -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    chain = _fake()
    revoked = (
        x509.RevokedCertificateBuilder()
        .serial_number(chain.ask.serial_number)
        .revocation_date(FAKE_NOW - timedelta(days=2))
        .build()
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.ark.subject)
        .last_update(FAKE_NOW - timedelta(days=1))
        .next_update(FAKE_NOW + timedelta(days=1))
        .add_revoked_certificate(revoked)
        .sign(
            chain.ark_key,
            hashes.SHA384(),
            rsa_padding=padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
        )
    )
    der = crl.public_bytes(serialization.Encoding.DER)
    coll = DictCollateral({("snp-crl", "Milan"): der})
    evidence = Evidence(
        tee=TeeType.SEV_SNP,
        data=chain.sign(build_report(version=3)),
        aux={"certs": chain.cert_table()},
    )
    assert _reason(_verify, evidence, trust=_fake_trust(chain), collateral=coll, now=FAKE_NOW) is (
        Reason.CERT_REVOKED
    )
    bad = bytearray(der)
    bad[-5] ^= 1
    coll = DictCollateral({("snp-crl", "Milan"): bytes(bad)})
    assert _reason(_verify, evidence, trust=_fake_trust(chain), collateral=coll, now=FAKE_NOW) is (
        Reason.CRL_INVALID
    )


def test_fake_chain_debug_policy_and_masked_chip_id() -> None:
    chain = _fake(hwid=bytes(64))
    report = build_report(policy=0xB0000, flags=0b10, chip_id=bytes(64))
    verified = _verify(_fake_evidence(chain, report), trust=_fake_trust(chain), now=FAKE_NOW)
    assert verified.debug is True
    assert verified.platform_id is None


def test_unsigned_report_is_rejected() -> None:
    chain = _fake()
    evidence = _fake_evidence(chain, build_report(flags=7 << 2))
    assert _reason(_verify, evidence, trust=_fake_trust(chain), now=FAKE_NOW) is (
        Reason.SIGNATURE_INVALID
    )


# --- certificate table ----------------------------------------------------------------------


def test_cert_table_round_trip_and_errors() -> None:
    table = ev.build_cert_table({"vcek": b"A" * 10, "ask": b"B" * 5})
    parsed = ev.parse_cert_table(table)
    assert parsed.entries == {"vcek": b"A" * 10, "ask": b"B" * 5}
    assert _reason(ev.parse_cert_table, table[:-1]) is Reason.EVIDENCE_TRUNCATED
    assert _reason(ev.parse_cert_table, table[:24]) is Reason.EVIDENCE_TRUNCATED
    dup = table[:24] + table[:24] + bytes(24)
    assert _reason(ev.parse_cert_table, dup) is Reason.EVIDENCE_MALFORMED


# --- property tests -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1400))
def test_parser_raises_only_format_errors_on_random_input(data: bytes) -> None:
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_report(data)
    with contextlib.suppress(EvidenceFormatError):
        ev.parse_cert_table(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, ev.REPORT_SIZE - 1), st.integers(1, 255))
def test_parser_raises_only_format_errors_on_mutated_report(offset: int, xor: int) -> None:
    mutated = bytearray(REPORT)
    mutated[offset] ^= xor
    try:
        report = ev.parse_report(bytes(mutated))
    except EvidenceFormatError:
        return
    ev.describe_report(report)


def test_vcek_of_another_product_is_tcb_mismatch() -> None:
    chain = _fake(product="Milan")
    report = build_report(version=3, cpuid=(0x19, 0x11, 0x01))  # Genoa CPUID
    assert _reason(
        _verify, _fake_evidence(chain, report), trust=_fake_trust(chain), now=FAKE_NOW
    ) is (Reason.TCB_MISMATCH)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(VCEK) - 1), st.integers(1, 255))
def test_verifier_raises_only_attestation_errors_on_mutated_vcek(offset: int, xor: int) -> None:
    mutated = bytearray(VCEK)
    mutated[offset] ^= xor
    with pytest.raises(AttestationError):
        _verify(_real(aux={"vcek": bytes(mutated)}))


def _crl(chain: FakeAmdChain, *, revoke: int | None, next_update: datetime) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(chain.ark.subject)
        .last_update(next_update - timedelta(days=30))
        .next_update(next_update)
    )
    if revoke is not None:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(revoke)
            .revocation_date(next_update - timedelta(days=30))
            .build()
        )
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    crl = builder.sign(chain.ark_key, hashes.SHA384(), rsa_padding=pss)
    return crl.public_bytes(serialization.Encoding.DER)


def test_stale_crl_is_a_warning_not_a_failure() -> None:
    chain = _fake()
    stale = _crl(chain, revoke=None, next_update=FAKE_NOW - timedelta(days=3))
    coll = DictCollateral({("snp-crl", "Milan"): stale})
    verified = _verify(
        _fake_evidence(chain), trust=_fake_trust(chain), collateral=coll, now=FAKE_NOW
    )
    assert len(verified.warnings) == 1 and verified.warnings[0].startswith("crl_stale: ")
    fresh = _crl(chain, revoke=12345, next_update=FAKE_NOW + timedelta(days=3))
    coll = DictCollateral({("snp-crl", "Milan"): fresh})
    verified = _verify(
        _fake_evidence(chain), trust=_fake_trust(chain), collateral=coll, now=FAKE_NOW
    )
    assert verified.warnings == ()


def test_vlek_signed_report_verifies_without_chip_binding() -> None:
    chain = _fake(hwid=bytes(64))  # a VLEK names no chip: hwID is not compared
    table = ev.build_cert_table(
        {"vlek": chain.der("vcek"), "ask": chain.der("ask"), "ark": chain.der("ark")}
    )
    report = chain.sign(build_report(flags=1 << 2))  # SIGNING_KEY = VLEK
    evidence = Evidence(tee=TeeType.SEV_SNP, data=report, aux={"certs": table})
    verified = _verify(evidence, trust=_fake_trust(chain), now=FAKE_NOW)
    assert verified.claims["signing_key"] == "vlek"
    no_vlek = Evidence(tee=TeeType.SEV_SNP, data=report, aux={"certs": chain.cert_table()})
    assert _reason(_verify, no_vlek, trust=_fake_trust(chain), now=FAKE_NOW) is (
        Reason.COLLATERAL_MISSING
    )


_TABLE_CHAIN: list[FakeAmdChain] = []


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_verifier_raises_only_attestation_errors_on_mutated_cert_table(data: st.DataObject) -> None:
    if not _TABLE_CHAIN:
        _TABLE_CHAIN.append(_fake())
    chain = _TABLE_CHAIN[0]
    table = bytearray(chain.cert_table())
    offset = data.draw(st.integers(0, len(table) - 1))
    table[offset] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, 4))
    evidence = Evidence(
        tee=TeeType.SEV_SNP,
        data=chain.sign(build_report()),
        aux={"certs": bytes(table[: len(table) - cut])},
    )
    try:
        _verify(evidence, trust=_fake_trust(chain), now=FAKE_NOW)
    except AttestationError:
        return
    # The table itself is unsigned: a mutation may be accepted only if it left the VCEK and
    # ASK that the verdict rests on intact (e.g. it turned the ARK copy's GUID into an
    # unknown one, which is ignored; trust comes from the anchors, never from the table).
    parsed = ev.parse_cert_table(evidence.aux["certs"])
    assert parsed.get("vcek") == chain.der("vcek")
    assert parsed.get("ask") == chain.der("ask")


def test_an_ask_with_an_unreadable_key_algorithm_is_a_typed_error() -> None:
    # Found by the property test above (offset 1386 ^ 2 of the fake chain's table): a
    # flipped byte in the ASK's key algorithm OID made cryptography raise
    # UnsupportedAlgorithm from the lazily parsed key, which escaped as a crash.
    if not _TABLE_CHAIN:
        _TABLE_CHAIN.append(_fake())
    chain = _TABLE_CHAIN[0]
    table = bytearray(chain.cert_table())
    rsa_oid = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1, rsaEncryption
    hits = [i for i in range(len(table)) if table[i : i + len(rsa_oid)] == rsa_oid]
    assert hits, "the fake chain's table holds RSA keys"
    for at in hits:
        mutated = bytearray(table)
        mutated[at + len(rsa_oid) - 1] ^= 0x04  # ...1.1.1 -> ...1.1.5: no key type
        evidence = Evidence(
            tee=TeeType.SEV_SNP,
            data=chain.sign(build_report()),
            aux={"certs": bytes(mutated)},
        )
        with pytest.raises(AttestationError):
            _verify(evidence, trust=_fake_trust(chain), now=FAKE_NOW)
