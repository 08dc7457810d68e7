"""detect() and attester_for(): which TEE a machine offers, in the documented order."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedtee.attest.attesters import attester_for, detect
from fedtee.attest.attesters.configfs_tsm import ConfigfsTsmAttester
from fedtee.attest.attesters.gramine import GramineAttester
from fedtee.attest.model import Attester, TeeType
from fedtee.attest.testing.configfs_tsm import FakeTsmKernel, echo_report
from fedtee.attest.testing.gramine import FakeGramine, echo_quote
from fedtee.errors import ConfigError, DeviceError, Reason

DATA = Path(__file__).resolve().parents[2] / "data"
TDX_V4 = (DATA / "configfs" / "tdx_prod_quote_SPR_E4.dat").read_bytes()
SGX_QUOTE = (DATA / "gramine" / "occlum_quote_v3.dat").read_bytes()


def add_tpm(root: Path) -> None:
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev" / "tpmrm0").write_bytes(b"")


@pytest.mark.parametrize(
    ("provider", "tee"),
    [("tdx_guest", "tdx"), ("sev_guest", "sev-snp"), ("arm_cca_guest", "cca")],
)
def test_configfs_provider_is_detected(tmp_path: Path, provider: str, tee: str) -> None:
    fake = FakeTsmKernel(tmp_path, provider=provider)

    assert detect(root=tmp_path, filesystem=fake) == tee
    assert list(fake.report_dir.iterdir()) == []  # the probe entry was removed


def test_configfs_wins_over_gramine_and_tpm(tmp_path: Path) -> None:
    FakeGramine(tmp_path)
    add_tpm(tmp_path)
    fake = FakeTsmKernel(tmp_path, provider="sev_guest")

    assert detect(root=tmp_path, filesystem=fake) == "sev-snp"


def test_gramine_dcap_wins_over_tpm(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path)
    add_tpm(tmp_path)

    assert detect(root=tmp_path, filesystem=fake) == "sgx"


def test_gramine_without_dcap_falls_through_to_tpm(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, attestation_type="none")
    add_tpm(tmp_path)

    assert detect(root=tmp_path, filesystem=fake) == "tpm"


def test_unknown_configfs_provider_falls_through_to_tpm(tmp_path: Path) -> None:
    fake = FakeTsmKernel(tmp_path, provider="future_guest")
    add_tpm(tmp_path)

    assert detect(root=tmp_path, filesystem=fake) == "tpm"


def test_tpm_alone_on_the_real_filesystem(tmp_path: Path) -> None:
    add_tpm(tmp_path)

    assert detect(root=tmp_path) == "tpm"


def test_nothing_found_names_everything_looked_for(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, attestation_type="none")

    with pytest.raises(DeviceError) as err:
        detect(root=tmp_path, filesystem=fake)

    msg = err.value.message
    assert err.value.reason is Reason.DEVICE_ABSENT
    assert str(tmp_path / "sys/kernel/config/tsm/report") in msg
    assert str(tmp_path / "dev/attestation/attestation_type") in msg
    assert "'none'" in msg
    assert str(tmp_path / "dev/tpmrm0") in msg
    assert "--tee sim" in msg


def test_auto_builds_the_detected_attester_and_it_attests(tmp_path: Path) -> None:
    fake = FakeTsmKernel(tmp_path, make_outblob=echo_report(TDX_V4, "tdx_guest"))

    attester = attester_for("auto", root=tmp_path, filesystem=fake)
    evidence = attester.attest(bytes(range(64)))

    assert isinstance(attester, ConfigfsTsmAttester)
    assert isinstance(attester, Attester)
    assert evidence.tee is TeeType.TDX


def test_sgx_builds_the_gramine_attester(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=echo_quote(SGX_QUOTE))

    attester = attester_for("sgx", root=tmp_path, filesystem=fake)

    assert isinstance(attester, GramineAttester)
    assert attester.attest(bytes(64)).tee is TeeType.SGX


def test_named_tee_must_match_the_configfs_provider(tmp_path: Path) -> None:
    fake = FakeTsmKernel(tmp_path, provider="sev_guest")

    with pytest.raises(DeviceError, match="sev_guest"):
        attester_for("tdx", root=tmp_path, filesystem=fake)
    assert attester_for("sev-snp", root=tmp_path, filesystem=fake).tee is TeeType.SEV_SNP


def test_tpm_without_device_is_absent(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as err:
        attester_for("tpm", root=tmp_path)

    assert err.value.reason is Reason.DEVICE_ABSENT


def test_psa_and_unknown_names_are_typed_errors() -> None:
    with pytest.raises(DeviceError, match="arm-cca-trustzone"):
        attester_for("psa")
    with pytest.raises(ConfigError, match="auto"):
        attester_for("quantum")


def test_device_attesters_import_nothing_heavy(tmp_path: Path) -> None:
    # The IoT client may import numpy, grpcio, protobuf, cryptography and its device library.
    add_tpm(tmp_path)
    code = f"""
import json, sys
from fedtee.attest.attesters import detect
from fedtee.attest.attesters import configfs_tsm, gramine
detect(root={str(tmp_path)!r})
print(json.dumps(sorted(sys.modules)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(out.stdout))
    for heavy in ("cbor2", "sqlalchemy", "rich", "safetensors", "tpm2_pytss", "sklearn", "torch"):
        assert heavy not in loaded, heavy
    for layer in ("fedtee.server", "fedtee.wire", "fedtee.ledger", "fedtee.attest.verify"):
        assert layer not in loaded, layer


@pytest.mark.skipif(
    importlib.util.find_spec("fedtee.attest.attesters.sim") is None,
    reason="fedtee.attest.attesters.sim is not written yet (attest-core helper's)",
)
def test_sim_is_built_by_name() -> None:
    sim = importlib.import_module("fedtee.attest.attesters.sim")
    root = sim.SimRoot.generate()
    platform = sim.SimPlatform.generate(root)

    attester = attester_for("sim", platform=platform, measurement=bytes(48))

    assert attester.tee is TeeType.SIM
    assert attester.attest(bytes(64)).tee is TeeType.SIM


class _NoPermission(FakeTsmKernel):
    def mkdir(self, path: Path) -> None:
        raise PermissionError(13, "Permission denied", str(path))


def test_unprivileged_configfs_falls_through_and_says_why(tmp_path: Path) -> None:
    fake = _NoPermission(tmp_path, provider="tdx_guest")

    with pytest.raises(DeviceError) as err:
        detect(root=tmp_path, filesystem=fake)

    assert "run the client as root" in err.value.message
    add_tpm(tmp_path)
    assert detect(root=tmp_path, filesystem=fake) == "tpm"


def test_detection_says_why_every_other_source_was_not_picked(tmp_path: Path) -> None:
    from fedtee.attest.attesters import detect_with_reasons

    FakeGramine(tmp_path)
    add_tpm(tmp_path)
    fake = FakeTsmKernel(tmp_path, provider="tdx_guest")

    found = detect_with_reasons(root=tmp_path, filesystem=fake)

    assert found.tee == "tdx"
    assert found.skipped == (
        "gramine: also present (sgx), but configfs-tsm is preferred",
        "tpm (" + str(tmp_path / "dev/tpmrm0") + "): also present (tpm), but configfs-tsm is "
        "preferred",
        "sim: never picked automatically (development only: --tee sim)",
    )


def test_detection_of_a_tpm_lists_the_absent_sources_with_their_paths(tmp_path: Path) -> None:
    from fedtee.attest.attesters import detect_with_reasons

    add_tpm(tmp_path)

    found = detect_with_reasons(root=tmp_path)

    assert found.tee == "tpm"
    configfs, gramine, sim = found.skipped
    assert configfs.startswith("configfs-tsm: ") and str(tmp_path / "sys/kernel") in configfs
    assert gramine.startswith("gramine: ") and str(tmp_path / "dev/attestation") in gramine
    assert sim.startswith("sim: never picked")
