"""configfs-tsm attester against a fake kernel tree, and real outblobs decoded end to end."""

from __future__ import annotations

import errno
import importlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.attesters._devfs import BlobTooLarge, OsFilesystem
from fedtee.attest.attesters.configfs_tsm import (
    REPORT_DIR,
    ConfigfsTsmAttester,
    TsmReport,
    evidence_from_report,
    probe_provider,
)
from fedtee.attest.model import Evidence, TeeType, TrustAnchors
from fedtee.attest.testing.configfs_tsm import FakeTsmKernel, echo_report
from fedtee.errors import CollateralError, ConfigError, DeviceError, Reason

DATA = Path(__file__).resolve().parents[2] / "data" / "configfs"
# go-tdx-guest appended b"\nextra bytes(only for testing purpose)\n" (39 bytes) after
# this quote to test its parser; a kernel outblob is the quote alone, so that tail is cut.
TDX_V4_FILE = (DATA / "tdx_prod_quote_SPR_E4.dat").read_bytes()
TDX_V4 = TDX_V4_FILE[: 48 + 584 + 4 + int.from_bytes(TDX_V4_FILE[632:636], "little")]
TDX_V5 = (DATA / "quote_v5_sample.dat").read_bytes()
SNP_REPORT = (DATA / "attestation.bin").read_bytes()
VCEK_DER = (DATA / "vcek.der").read_bytes()
CCA_TOKEN = (DATA / "cca-example-token.cbor").read_bytes()

# Ground truth from /work/shared/attestation-vectors/*/expected.json.
TDX_V4_REPORT_DATA = bytes.fromhex(
    "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545"
    "eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"
)
TDX_V4_MRTD = (
    "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
    "22fc00b8dcd404bc10d5e119d7215cbb"
)
TDX_V5_REPORT_DATA = bytes.fromhex(
    "945eaacf5abc1f719d8666a942fda03d1edcb4490277396093dc5a5289ab9f1e"
    "094aed63060cd4a4933a4dd537ed1255c9c79ecb3ed82cd1b486233e31c25c3a"
)
TDX_V5_MRTD = (
    "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb0"
    "01a1ced3ee19747dda8f750c3bc8f876"
)
SNP_REPORT_DATA = bytes.fromhex("0102030405") + bytes(59)
SNP_MEASUREMENT = (
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
    "6bdf8a9ece31a5a608eb0cf2e4872b01"
)
SNP_CHIP_ID = (
    "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
    "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d"
)
CCA_REALM_CHALLENGE = (
    "57e979ae2618de0c1ab73144c440d741cf9236dc9d52ed190053382a4d190252"
    "f9f0370403c35dcb155fb4362d73c66d5b0494bf939315d3dc52b8cdc8b85a96"
)

# SEV-SNP certificate table (GHCB spec, extended guest request): entries of GUID (16 bytes),
# offset (u32) and length (u32), ended by an all-zero entry. The host tools that fill it
# (virtee/sev, snphost) and go-sev-guest write GUIDs in RFC 4122 byte order, not EFI order.
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")


def snp_cert_table(certs: list[tuple[uuid.UUID, bytes]]) -> bytes:
    header_size = 24 * (len(certs) + 1)
    entries, blobs, offset = b"", b"", header_size
    for guid, der in certs:
        entries += guid.bytes + offset.to_bytes(4, "little") + len(der).to_bytes(4, "little")
        blobs += der
        offset += len(der)
    return entries + bytes(24) + blobs


def rd(seed: int) -> bytes:
    return bytes((seed + i) % 256 for i in range(64))


def kernel(tmp_path: Path, **kw: Any) -> FakeTsmKernel:
    return FakeTsmKernel(tmp_path, **kw)


def leftover_entries(k: FakeTsmKernel) -> list[str]:
    return sorted(p.name for p in k.report_dir.iterdir())


def parser(name: str) -> Any:
    try:
        return importlib.import_module(f"fedtee.attest.evidence.{name}")
    except ImportError:
        pytest.skip(f"fedtee.attest.evidence.{name} is not importable yet (another helper's)")


# --- the happy paths ------------------------------------------------------------------------


def test_tdx_report_carries_our_report_data_and_cleans_up(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="tdx_guest", make_outblob=echo_report(TDX_V4, "tdx_guest"))
    attester = ConfigfsTsmAttester(root=tmp_path, filesystem=k)

    evidence = attester.attest(rd(1))

    assert attester.tee is TeeType.TDX
    assert evidence.tee is TeeType.TDX
    assert evidence.data[568:632] == rd(1)
    assert len(evidence.data) == len(TDX_V4)
    assert dict(evidence.aux) == {}
    assert len(k.created) == 2  # the provider probe and the report
    assert k.removed == k.created
    assert leftover_entries(k) == []


def test_tdx_v5_quote_is_recognised(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="tdx_guest", make_outblob=echo_report(TDX_V5, "tdx_guest"))

    evidence = ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(2))

    assert evidence.data[574:638] == rd(2)


def test_snp_report_with_certificate_table_and_privlevel(tmp_path: Path) -> None:
    table = snp_cert_table([(VCEK_GUID, VCEK_DER)])
    seen: list[int | None] = []

    def make(inblob: bytes, privlevel: int | None) -> bytes:
        seen.append(privlevel)
        return echo_report(SNP_REPORT, "sev_guest")(inblob, privlevel)

    k = kernel(tmp_path, provider="sev_guest", make_outblob=make, auxblob=table)
    attester = ConfigfsTsmAttester(root=tmp_path, filesystem=k, privlevel=2)

    evidence = attester.attest(rd(3))

    assert evidence.tee is TeeType.SEV_SNP
    assert evidence.data[0x50:0x90] == rd(3)
    assert evidence.aux["certs"] == table
    assert seen == [2]
    assert leftover_entries(k) == []


def test_snp_without_auxblob_has_no_certs(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="sev_guest", make_outblob=echo_report(SNP_REPORT, "sev_guest"))

    evidence = ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(4))

    assert "certs" not in evidence.aux


def test_cca_token_is_passed_through(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="arm_cca_guest", make_outblob=lambda i, p: CCA_TOKEN)

    evidence = ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(5))

    assert evidence.tee is TeeType.CCA
    assert evidence.data == CCA_TOKEN
    assert dict(evidence.aux) == {}


@pytest.mark.parametrize(
    ("provider", "expect"),
    [("tdx_guest", "tdx"), ("sev_guest", "sev-snp"), ("arm_cca_guest", "cca")],
)
def test_probe_provider_maps_each_provider(tmp_path: Path, provider: str, expect: str) -> None:
    k = kernel(tmp_path, provider=provider)

    assert probe_provider(root=tmp_path, filesystem=k) == provider
    assert ConfigfsTsmAttester(root=tmp_path, filesystem=k).tee.value == expect
    assert leftover_entries(k) == []


# --- real outblobs, decoded with fedtee's own parsers -------------------------------------


def _through_fake(
    tmp_path: Path, provider: str, blob: bytes, report_data: bytes, auxblob: bytes | None = None
) -> Evidence:
    k = kernel(tmp_path, provider=provider, make_outblob=lambda i, p: blob, auxblob=auxblob)
    evidence = ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(report_data)
    assert leftover_entries(k) == []
    return evidence


@pytest.mark.parametrize(
    ("blob", "report_data", "mrtd"),
    [(TDX_V4, TDX_V4_REPORT_DATA, TDX_V4_MRTD), (TDX_V5, TDX_V5_REPORT_DATA, TDX_V5_MRTD)],
    ids=["v4", "v5"],
)
def test_real_tdx_outblob_parses(
    tmp_path: Path, blob: bytes, report_data: bytes, mrtd: str
) -> None:
    evidence = _through_fake(tmp_path, "tdx_guest", blob, report_data)
    assert evidence.data == blob

    shown = json.dumps(parser("tdx").describe(evidence))

    assert report_data.hex() in shown
    assert mrtd in shown


def test_real_snp_outblob_and_auxblob_parse(tmp_path: Path) -> None:
    table = snp_cert_table([(VCEK_GUID, VCEK_DER)])
    evidence = _through_fake(tmp_path, "sev_guest", SNP_REPORT, SNP_REPORT_DATA, table)
    assert evidence.data == SNP_REPORT
    assert evidence.aux["certs"] == table

    shown = json.dumps(parser("snp").describe(evidence))

    assert SNP_REPORT_DATA.hex() in shown
    assert SNP_MEASUREMENT in shown
    assert SNP_CHIP_ID in shown


def test_real_cca_outblob_parses(tmp_path: Path) -> None:
    evidence = _through_fake(tmp_path, "arm_cca_guest", CCA_TOKEN, rd(6))
    assert evidence.data == CCA_TOKEN

    shown = json.dumps(parser("cca").describe(evidence))

    assert CCA_REALM_CHALLENGE in shown


# --- concurrent writers ---------------------------------------------------------------------


def test_one_concurrent_write_is_retried_in_a_fresh_entry(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"), interfere=1)
    attester = ConfigfsTsmAttester(root=tmp_path, filesystem=k)

    evidence = attester.attest(rd(7))

    assert evidence.data[568:632] == rd(7)
    assert len(k.created) == 3  # probe, interfered attempt, good attempt
    assert len(set(k.created)) == 3
    assert leftover_entries(k) == []


def test_writer_in_every_attempt_is_device_busy(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"), interfere=99)
    attester = ConfigfsTsmAttester(root=tmp_path, filesystem=k, attempts=4)

    with pytest.raises(DeviceError) as err:
        attester.attest(rd(8))

    assert err.value.reason is Reason.DEVICE_BUSY
    assert "4 attempts" in err.value.message
    assert len(k.created) == 5
    assert leftover_entries(k) == []


def test_report_for_someone_elses_inblob_is_refused(tmp_path: Path) -> None:
    # Same generation story, but the kernel served a report for another inblob.
    k = kernel(tmp_path, make_outblob=lambda i, p: TDX_V4)

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(9))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert "report_data" in err.value.message
    assert leftover_entries(k) == []


# --- failures are typed, named and cleaned up ---------------------------------------------


def test_absent_interface_names_the_path_and_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path)

    assert err.value.reason is Reason.DEVICE_ABSENT
    assert str(tmp_path / REPORT_DIR) in err.value.message
    assert "Linux 6.7" in err.value.message


def test_real_filesystem_without_a_kernel_behind_it_fails_typed(tmp_path: Path) -> None:
    # A plain directory: mkdir works but no provider attribute appears.
    (tmp_path / REPORT_DIR).mkdir(parents=True)

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path)

    assert err.value.reason is Reason.DEVICE_FAILED
    assert list((tmp_path / REPORT_DIR).iterdir()) == []


def test_unknown_provider_is_rejected(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="future_guest")

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k)

    assert err.value.reason is Reason.DEVICE_ABSENT
    assert "future_guest" in err.value.message


def test_expected_tee_mismatch_is_rejected(tmp_path: Path) -> None:
    k = kernel(tmp_path, provider="sev_guest")

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k, expect_tee="tdx")

    assert "sev_guest" in err.value.message
    assert ConfigfsTsmAttester(root=tmp_path, filesystem=k, expect_tee="sev-snp").tee is (
        TeeType.SEV_SNP
    )


def test_outblob_failure_is_device_failed_with_a_hint_and_cleans_up(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"), outblob_error=errno.EIO)

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(10))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert "qgsd" in err.value.message
    assert leftover_entries(k) == []
    assert k.removed == k.created


@pytest.mark.parametrize(
    ("blob", "words"),
    [(b"", "empty"), (b"\x07" * 700, "recognises"), (TDX_V4[:600], "recognises")],
    ids=["empty", "garbage", "truncated"],
)
def test_unusable_outblob_is_rejected(tmp_path: Path, blob: bytes, words: str) -> None:
    k = kernel(tmp_path, make_outblob=lambda i, p: blob)

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(11))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert words in err.value.message


def test_oversized_outblob_is_refused_before_use(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=lambda i, p: bytes(70_000))

    with pytest.raises(DeviceError) as err:
        ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(12))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert "larger than" in err.value.message
    assert leftover_entries(k) == []


def test_privlevel_rules(tmp_path: Path) -> None:
    snp = kernel(
        tmp_path / "snp",
        provider="sev_guest",
        privlevel_floor=1,
        make_outblob=echo_report(SNP_REPORT, "sev_guest"),
    )
    tdx = kernel(tmp_path / "tdx", provider="tdx_guest")

    with pytest.raises(ConfigError, match="privlevel_floor"):
        ConfigfsTsmAttester(root=tmp_path / "snp", filesystem=snp, privlevel=0).attest(rd(13))
    with pytest.raises(ConfigError, match="SEV-SNP"):
        ConfigfsTsmAttester(root=tmp_path / "tdx", filesystem=tdx, privlevel=0)
    with pytest.raises(ConfigError):
        ConfigfsTsmAttester(root=tmp_path / "snp", filesystem=snp, privlevel=4)
    assert leftover_entries(snp) == []


def test_report_data_must_be_64_bytes(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"))
    attester = ConfigfsTsmAttester(root=tmp_path, filesystem=k)

    with pytest.raises(ConfigError):
        attester.attest(bytes(32))
    assert len(k.created) == 1  # nothing was written to the device


def test_cleanup_failure_does_not_mask_the_result(tmp_path: Path) -> None:
    k = kernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"), rmdir_error=errno.EBUSY)

    evidence = ConfigfsTsmAttester(root=tmp_path, filesystem=k).attest(rd(14))

    assert evidence.data[568:632] == rd(14)


def test_evidence_from_report_refuses_empty_and_unknown() -> None:
    with pytest.raises(DeviceError):
        evidence_from_report(TsmReport("tdx_guest", 1, b"", b""))
    with pytest.raises(DeviceError):
        evidence_from_report(TsmReport("other", 1, b"x", b""))
    # TDX has no auxblob contract: anything there is dropped, not forwarded unchecked.
    assert dict(evidence_from_report(TsmReport("tdx_guest", 1, b"q", b"aux")).aux) == {}


def test_os_filesystem_read_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "blob"
    f.write_bytes(bytes(101))
    fs = OsFilesystem()

    assert len(fs.read(f, limit=101)) == 101
    with pytest.raises(BlobTooLarge):
        fs.read(f, limit=100)


def test_v4_fixture_tail_is_the_known_test_marker() -> None:
    assert len(TDX_V4) == 4935
    assert TDX_V4_FILE[len(TDX_V4) :] == b"\nextra bytes(only for testing purpose)\n"


# --- whatever the kernel hands back, the attester fails typed or returns evidence ----------


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    provider=st.sampled_from(["tdx_guest", "sev_guest", "arm_cca_guest"]),
    template=st.sampled_from([TDX_V4, TDX_V5, SNP_REPORT, CCA_TOKEN, b""]),
    cut=st.integers(min_value=0, max_value=6000),
    flip=st.integers(min_value=0, max_value=6000),
    junk=st.binary(max_size=64),
    auxblob=st.one_of(st.none(), st.binary(max_size=256)),
)
def test_any_outblob_gives_evidence_or_a_device_error(
    tmp_path_factory: pytest.TempPathFactory,
    provider: str,
    template: bytes,
    cut: int,
    flip: int,
    junk: bytes,
    auxblob: bytes | None,
) -> None:
    root = tmp_path_factory.mktemp("tsm")
    blob = bytearray(template[:cut] + junk)
    if blob:
        blob[flip % len(blob)] ^= 0x01

    def make(inblob: bytes, privlevel: int | None) -> bytes:
        return echo_report(bytes(blob), provider)(inblob, privlevel) if blob else b""

    k = kernel(root, provider=provider, make_outblob=make, auxblob=auxblob)
    try:
        evidence = ConfigfsTsmAttester(root=root, filesystem=k).attest(rd(15))
    except DeviceError as exc:
        assert exc.reason is Reason.DEVICE_FAILED
    else:
        assert evidence.tee.value in ("tdx", "sev-snp", "cca")
        assert evidence.data
    assert leftover_entries(k) == []


# --- end to end: what the attester hands over is what the SNP verifier needs --------------


class _NoCollateral:
    def get(self, kind: str, key: str) -> bytes:
        raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)


def test_snp_evidence_from_configfs_verifies_with_the_auxblob_vcek(tmp_path: Path) -> None:
    try:
        amd = importlib.import_module("fedtee.attest.trust.amd")
        snp_verify = importlib.import_module("fedtee.attest.verify.snp")
    except ImportError:
        pytest.skip("the SEV-SNP verifier is not importable yet (another helper's)")
    table = snp_cert_table([(VCEK_GUID, VCEK_DER)])
    evidence = _through_fake(tmp_path, "sev_guest", SNP_REPORT, SNP_REPORT_DATA, table)
    trust = TrustAnchors(roots={TeeType.SEV_SNP: amd.anchors()})
    # valid_at from /work/shared/attestation-vectors/sev-snp/expected.json
    now = datetime(2024, 1, 1, tzinfo=UTC)

    verified = snp_verify.SnpVerifier().verify(
        evidence, trust=trust, collateral=_NoCollateral(), now=now
    )

    assert verified.report_data == SNP_REPORT_DATA
    assert verified.measurements["measurement"].hex() == SNP_MEASUREMENT
    # Without the auxblob the VCEK has to come from collateral, which is empty here.
    bare = Evidence(TeeType.SEV_SNP, evidence.data)
    with pytest.raises(CollateralError):
        snp_verify.SnpVerifier().verify(bare, trust=trust, collateral=_NoCollateral(), now=now)


TDX_COLLATERAL = Path(__file__).resolve().parents[2] / "data" / "tdx" / "collateral"


class _TdxBundle:
    """The TDX verifier's offline collateral bundle, <dir>/<kind>/<key>."""

    def get(self, kind: str, key: str) -> bytes:
        path = TDX_COLLATERAL / kind / key
        if not path.is_file():
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)
        return path.read_bytes()


def test_tdx_evidence_from_configfs_verifies_to_the_expected_outcome(tmp_path: Path) -> None:
    try:
        intel = importlib.import_module("fedtee.attest.trust.intel")
        tdx_verify = importlib.import_module("fedtee.attest.verify.tdx")
    except ImportError:
        pytest.skip("the TDX verifier is not importable yet (another helper's)")
    if not TDX_COLLATERAL.is_dir():
        pytest.skip("tests/data/tdx/collateral (the TDX helper's bundle) is not there yet")
    evidence = _through_fake(tmp_path, "tdx_guest", TDX_V4, TDX_V4_REPORT_DATA)
    trust = TrustAnchors(roots={TeeType.TDX: intel.anchors()})

    verified = tdx_verify.TdxVerifier().verify(
        evidence, trust=trust, collateral=_TdxBundle(), now=datetime(2023, 7, 1, 1, tzinfo=UTC)
    )

    # expected.json: signatures and chain valid, but no TCB level matches -> Unsupported.
    assert verified.tcb_status.value == "Unsupported"
    assert verified.measurements["mrtd"].hex() == TDX_V4_MRTD
    assert verified.report_data == TDX_V4_REPORT_DATA


def test_cca_evidence_from_configfs_verifies_with_the_cpak(tmp_path: Path) -> None:
    try:
        cca_verify = importlib.import_module("fedtee.attest.verify.cca")
    except ImportError:
        pytest.skip("the CCA verifier is not importable yet (another helper's)")
    import base64

    from cryptography.hazmat.primitives.asymmetric import ec

    jwk = json.loads((DATA / "cpak-pub.json").read_text())

    def coord(v: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(v + "=" * (-len(v) % 4)), "big")

    cpak = ec.EllipticCurvePublicNumbers(coord(jwk["x"]), coord(jwk["y"]), ec.SECP384R1())
    evidence = _through_fake(tmp_path, "arm_cca_guest", CCA_TOKEN, rd(16))
    trust = TrustAnchors(keys={TeeType.CCA: (cpak.public_key(),)})

    verified = cca_verify.CcaVerifier().verify(
        evidence, trust=trust, collateral=_NoCollateral(), now=datetime(2025, 1, 1, tzinfo=UTC)
    )

    assert verified.report_data.hex() == CCA_REALM_CHALLENGE
