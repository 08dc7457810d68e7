"""Gramine SGX attester against a fake /dev/attestation, and the real quote decoded."""

from __future__ import annotations

import errno
import importlib
import json
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.attesters.gramine import ATTESTATION_DIR, GramineAttester, attestation_type
from fedtee.attest.model import TeeType, TrustAnchors
from fedtee.attest.testing.gramine import FakeGramine, echo_quote
from fedtee.errors import CollateralError, ConfigError, DeviceError, Reason

QUOTE = (
    Path(__file__).resolve().parents[2] / "data" / "gramine" / "occlum_quote_v3.dat"
).read_bytes()
# From /work/shared/attestation-vectors/sgx/expected.json.
QUOTE_REPORT_DATA = b"test" + bytes(60)
MRENCLAVE = "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68"
MRSIGNER = "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e"
REPORT_DATA_AT = 48 + 320  # quote header, then report_data at the end of the SGX report body


def rd(seed: int) -> bytes:
    return bytes((seed * 7 + i) % 256 for i in range(64))


def test_quote_carries_written_report_data(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=echo_quote(QUOTE))
    attester = GramineAttester(root=tmp_path, filesystem=fake)

    evidence = attester.attest(rd(1))

    assert attester.tee is TeeType.SGX
    assert attester.report_data_size == 64
    assert evidence.tee is TeeType.SGX
    assert fake.user_report_data == rd(1)
    assert evidence.data[REPORT_DATA_AT : REPORT_DATA_AT + 64] == rd(1)
    assert dict(evidence.aux) == {}


def test_real_quote_is_passed_through_and_parses(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=lambda report_data: QUOTE)

    evidence = GramineAttester(root=tmp_path, filesystem=fake).attest(QUOTE_REPORT_DATA)

    assert evidence.data == QUOTE
    try:
        sgx = importlib.import_module("fedtee.attest.evidence.sgx")
    except ImportError:
        pytest.skip("fedtee.attest.evidence.sgx is not importable yet (another helper's)")
    shown = json.dumps(sgx.describe(evidence))
    assert MRENCLAVE in shown
    assert MRSIGNER in shown
    assert QUOTE_REPORT_DATA.hex() in shown


def test_absent_device_names_the_path_and_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(DeviceError) as err:
        GramineAttester(root=tmp_path)

    assert err.value.reason is Reason.DEVICE_ABSENT
    assert str(tmp_path / ATTESTATION_DIR / "attestation_type") in err.value.message
    assert "gramine-sgx" in err.value.message
    assert 'sgx.remote_attestation = "dcap"' in err.value.message


@pytest.mark.parametrize("kind", ["none", "epid", ""])
def test_attestation_type_other_than_dcap_is_refused(tmp_path: Path, kind: str) -> None:
    fake = FakeGramine(tmp_path, attestation_type=kind, make_quote=echo_quote(QUOTE))

    with pytest.raises(DeviceError) as err:
        GramineAttester(root=tmp_path, filesystem=fake)

    assert err.value.reason is Reason.DEVICE_ABSENT
    assert "dcap" in err.value.message
    assert fake.quotes_served == 0


def test_attestation_type_reads_real_files(tmp_path: Path) -> None:
    d = tmp_path / ATTESTATION_DIR
    d.mkdir(parents=True)
    (d / "attestation_type").write_text("dcap\n")

    assert attestation_type(root=tmp_path) == "dcap"


def test_stale_quote_for_other_report_data_is_refused(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=lambda report_data: QUOTE)

    with pytest.raises(DeviceError) as err:
        GramineAttester(root=tmp_path, filesystem=fake).attest(rd(2))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert "report_data" in err.value.message


@pytest.mark.parametrize(
    "quote",
    [b"", b"\x03\x00" + bytes(100), QUOTE[:400], bytes(70_000)],
    ids=["empty", "short", "truncated", "oversized"],
)
def test_unusable_quote_is_device_failed(tmp_path: Path, quote: bytes) -> None:
    fake = FakeGramine(tmp_path, make_quote=lambda report_data: quote)

    with pytest.raises(DeviceError) as err:
        GramineAttester(root=tmp_path, filesystem=fake).attest(rd(3))

    assert err.value.reason is Reason.DEVICE_FAILED


def test_quote_provider_failure_is_device_failed_with_hint(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=echo_quote(QUOTE), quote_error=errno.EACCES)

    with pytest.raises(DeviceError) as err:
        GramineAttester(root=tmp_path, filesystem=fake).attest(rd(4))

    assert err.value.reason is Reason.DEVICE_FAILED
    assert "libsgx-dcap-default-qpl" in err.value.message


def test_report_data_must_be_64_bytes(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=echo_quote(QUOTE))
    attester = GramineAttester(root=tmp_path, filesystem=fake)

    with pytest.raises(ConfigError):
        attester.attest(bytes(63))
    assert fake.quotes_served == 0


def test_sequential_quotes_each_bind_their_own_data(tmp_path: Path) -> None:
    fake = FakeGramine(tmp_path, make_quote=echo_quote(QUOTE))
    attester = GramineAttester(root=tmp_path, filesystem=fake)

    first = attester.attest(rd(5))
    second = attester.attest(rd(6))

    assert first.data != second.data
    assert second.data[REPORT_DATA_AT : REPORT_DATA_AT + 64] == rd(6)


# --- the Gramine manifest template ---------------------------------------------------------

TEMPLATE = (
    Path(__file__).resolve().parents[3] / "deploy" / "gramine" / ("fedtee-client.manifest.template")
)
_FOR = re.compile(
    r"\{% for path in python\.get_sys_path\(entrypoint\) %\}\n(.*?)\{% endfor %\}\n", re.S
)
_EXPR = re.compile(r"\{\{ (.*?) \}\}")


def render(template: str, variables: dict[str, str], sys_path: list[tuple[str, bool]]) -> str:
    """Just enough of gramine-manifest's Jinja to render this template; fails on anything else."""

    def loop(m: re.Match[str]) -> str:
        out = ""
        for path, is_dir in sys_path:
            body = m.group(1).replace("{{ '/' if path.is_dir() else '' }}", "/" if is_dir else "")
            out += body.replace("{{ path }}", path)
        return out

    text = _FOR.sub(loop, template)
    assert "{%" not in text, "template uses Jinja statements the test does not know"

    def expr(m: re.Match[str]) -> str:
        return variables[m.group(1)]  # KeyError: an undocumented template variable

    return _EXPR.sub(expr, text)


def test_manifest_template_renders_to_a_production_dcap_manifest() -> None:
    variables = {
        "entrypoint": "/usr/bin/python3.11",
        "site_packages": "/srv/venv/lib/python3.11/site-packages",
        "fedtee_home": "/srv/fedtee-client",
        "arch_libdir": "/lib/x86_64-linux-gnu",
        "enclave_size": "4G",
        "max_threads": "64",
        "log_level": "error",
        "gramine.libos": "/usr/lib/x86_64-linux-gnu/gramine/libsysdb.so",
        "gramine.runtimedir()": "/usr/lib/x86_64-linux-gnu/gramine/runtime/glibc",
    }
    sys_path = [("/usr/lib/python3.11", True), ("/usr/lib/python3.11/lib-dynload", True)]

    manifest = tomllib.loads(render(TEMPLATE.read_text(), variables, sys_path))

    sgx = manifest["sgx"]
    assert sgx["debug"] is False
    assert sgx["remote_attestation"] == "dcap"
    assert sgx["enclave_size"] == "4G" and sgx["max_threads"] == 64
    assert "file:/srv/venv/lib/python3.11/site-packages/" in sgx["trusted_files"]
    assert "file:/srv/fedtee-client/config/" in sgx["trusted_files"]
    assert "file:/usr/lib/python3.11/" in sgx["trusted_files"]
    assert sgx["allowed_files"] == ["file:/srv/fedtee-client/data/"]
    state = [m for m in manifest["fs"]["mounts"] if m["path"] == "/fedtee/state"]
    assert state == [
        {
            "type": "encrypted",
            "path": "/fedtee/state",
            "uri": "file:/srv/fedtee-client/state",
            "key_name": "_sgx_mrenclave",
        }
    ]
    # argv is fixed in the (measured) manifest, never taken from the host.
    assert manifest["loader"]["argv"][1:4] == ["-m", "fedtee.cli.main", "client"]
    assert "insecure__use_cmdline_argv" not in manifest["loader"]
    assert not any(k.startswith("insecure") for k in manifest.get("fs", {}))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cut=st.integers(min_value=0, max_value=5000),
    flip=st.integers(min_value=0, max_value=5000),
    junk=st.binary(max_size=64),
)
def test_any_quote_gives_evidence_or_a_device_error(
    tmp_path_factory: pytest.TempPathFactory, cut: int, flip: int, junk: bytes
) -> None:
    blob = bytearray(QUOTE[:cut] + junk)
    if blob:
        blob[flip % len(blob)] ^= 0x80
    root = tmp_path_factory.mktemp("gramine")
    fake = FakeGramine(root, make_quote=echo_quote(bytes(blob)))

    try:
        evidence = GramineAttester(root=root, filesystem=fake).attest(rd(9))
    except DeviceError as exc:
        assert exc.reason is Reason.DEVICE_FAILED
    else:
        assert evidence.data[REPORT_DATA_AT : REPORT_DATA_AT + 64] == rd(9)


# --- end to end: the Gramine evidence is what the SGX verifier expects ---------------------

SGX_COLLATERAL = Path(__file__).resolve().parents[2] / "data" / "sgx" / "collateral"


class _Bundle:
    """The SGX verifier's offline collateral bundle, <dir>/<kind>/<key>."""

    def get(self, kind: str, key: str) -> bytes:
        path = SGX_COLLATERAL / kind / key
        if not path.is_file():
            raise CollateralError(f"no {kind}/{key}", reason=Reason.COLLATERAL_MISSING)
        return path.read_bytes()


def test_gramine_evidence_verifies_with_the_sgx_verifier(tmp_path: Path) -> None:
    try:
        intel = importlib.import_module("fedtee.attest.trust.intel")
        sgx_verify = importlib.import_module("fedtee.attest.verify.sgx")
    except ImportError:
        pytest.skip("the SGX verifier is not importable yet (another helper's)")
    if not SGX_COLLATERAL.is_dir():
        pytest.skip("tests/data/sgx/collateral (the SGX helper's bundle) is not there yet")
    fake = FakeGramine(tmp_path, make_quote=lambda report_data: QUOTE)
    evidence = GramineAttester(root=tmp_path, filesystem=fake).attest(QUOTE_REPORT_DATA)
    trust = TrustAnchors(roots={TeeType.SGX: intel.anchors()})

    verified = sgx_verify.SgxVerifier().verify(
        evidence, trust=trust, collateral=_Bundle(), now=datetime(2025, 3, 20, tzinfo=UTC)
    )

    assert verified.measurements["mrenclave"].hex() == MRENCLAVE
    assert verified.report_data == QUOTE_REPORT_DATA
    assert verified.debug is True  # the Occlum enclave was a debug build: policy must refuse
