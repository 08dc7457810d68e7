"""``fedtee attest verify`` / ``show`` on every shared real sample and on mutated copies.

Real evidence: tests/data/<tee>/ (copies of ../shared/attestation-vectors with PROVENANCE.md).
Each sample is verified at the time its expected.json gives and reaches the outcome stated
there; a copy with a flipped signed bit, a truncated copy and an extended copy are rejected
with their reason codes and a non-zero exit.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedtee.attest.result import AttestationResult, Status
from fedtee.cli.attest import EXIT_AFFIRMING, EXIT_CONTRAINDICATED, EXIT_WARNING
from fedtee.cli.main import main

DATA = Path(__file__).resolve().parents[2] / "data"
ROOT = Path(__file__).resolve().parents[3]


def expected(tee: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((DATA / tee / "expected.json").read_text())
    return loaded


SGX = expected("sgx")
TDX = expected("tdx")
TDX4 = TDX["tdx_prod_quote_SPR_E4.dat"]
TDX5 = TDX["quote_v5_sample.dat"]
SNP = expected("sev-snp")
PSA = expected("psa")["psa-2_0_0_sign1.bin"]
assert isinstance(TDX4, dict) and isinstance(TDX5, dict) and isinstance(PSA, dict)


def run(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def verify_json(
    argv: Sequence[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, AttestationResult]:
    code, out, _ = run(["attest", "verify", *argv, "--json"], capsys)
    return code, AttestationResult.from_json(out)


@dataclass(frozen=True)
class Sample:
    """One real sample: where it is, how to verify it, and the outcome its README states."""

    name: str
    blob: bytes
    options: tuple[str, ...]
    code: int
    reasons: tuple[str, ...]
    tcb: str | None
    claims: dict[str, object] = field(default_factory=dict)
    signed_offset: int = 100  # a byte inside the signed region


def _tdx_v4() -> bytes:
    # The shared file carries 39 test bytes after the 4935-byte quote (PROVENANCE.md).
    return (DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat").read_bytes()[:4935]


SAMPLES = [
    Sample(
        "sgx",
        (DATA / "sgx" / "occlum_quote_v3.dat").read_bytes(),
        ("--type", "sgx", "--collateral", str(DATA / "sgx" / "collateral"), "--at", "2025-03-20"),
        EXIT_CONTRAINDICATED,
        ("debug_enabled", "tcb_below_minimum"),  # debug enclave, OutOfDate TCB
        "OutOfDate",
        {
            "mrenclave": SGX["mrenclave"],
            "mrsigner": SGX["mrsigner"],
            "isv_prod_id": 0,
            "isv_svn": 0,
            "debug": True,
            "fmspc": SGX["fmspc"],
            "report_data": SGX["report_data"],
            "tcb_date": "2021-11-10T00:00:00Z",
        },
    ),
    Sample(
        "tdx-v4",
        _tdx_v4(),
        ("--type", "tdx", "--collateral", str(DATA / "tdx" / "collateral")),
        EXIT_CONTRAINDICATED,
        ("tcb_unsupported",),  # no matching TCB level in the real collateral
        "Unsupported",
        {
            "mrtd": TDX4["mrtd"],
            "rtmr0": TDX4["rtmr0"],
            "mrseam": TDX4["mrseam"],
            "report_data": TDX4["report_data"],
            "debug": False,
        },
    ),
    Sample(
        "tdx-v5",
        (DATA / "tdx" / "quote_v5_sample.dat").read_bytes(),
        ("--type", "tdx", "--collateral", str(DATA / "tdx" / "collateral")),
        EXIT_CONTRAINDICATED,
        ("cert_expired",),  # the TCB Signing certificate expired 2025-05-21
        None,
    ),
    Sample(
        "sev-snp",
        (DATA / "sev-snp" / "attestation.bin").read_bytes(),
        ("--type", "sev-snp", "--collateral", str(DATA / "sev-snp" / "collateral")),
        EXIT_CONTRAINDICATED,
        ("debug_enabled",),  # guest policy allows debug: the default policy forbids it
        "UpToDate",
        {
            "measurement": SNP["measurement"],
            "chip_id": SNP["chip_id"],
            "report_data": SNP["report_data"],
            "vmpl": 0,
        },
    ),
    Sample(
        "tpm",
        (DATA / "tpm" / "azure_vtpm_quote.json").read_bytes(),
        ("--type", "tpm"),
        EXIT_AFFIRMING,
        (),
        "NotApplicable",
    ),
    Sample(
        "psa",
        (DATA / "psa" / "psa-2_0_0_sign1.bin").read_bytes(),
        ("--type", "psa", "--trust", str(DATA / "psa" / "tfm_iak_public.pem")),
        EXIT_AFFIRMING,
        (),
        "NotApplicable",
        {"boot_seed": PSA["boot_seed(2397)"], "security_lifecycle_name": "secured"},
    ),
    Sample(
        "psa-iot",
        (DATA / "psa" / "psa-iot-1_sign1.bin").read_bytes(),
        ("--type", "psa", "--trust", str(DATA / "psa" / "tfm_iak_public.pem")),
        EXIT_AFFIRMING,
        (),
        "NotApplicable",
    ),
    Sample(
        "cca",
        (DATA / "cca" / "cca-example-token.cbor").read_bytes(),
        ("--type", "cca", "--trust", str(DATA / "cca" / "cpak-pub.json")),
        EXIT_AFFIRMING,
        (),
        "NotApplicable",
    ),
]
AT = {
    "tdx-v4": str(TDX4["verify_at"]),
    "tdx-v5": str(TDX5["verify_at"]),
    "sev-snp": str(SNP["valid_at"]),
    "tpm": "2025-03-20T00:00:00Z",  # no certificates: any time works
}
IDS = [s.name for s in SAMPLES]


def tpm_message(blob: bytes, change: Callable[[bytes], bytes]) -> bytes:
    """The Azure-style JSON with its signed TPMS_ATTEST ``message`` changed."""
    doc = json.loads(blob)
    message = base64.b64decode(doc["tpm_quote"]["message"])
    doc["tpm_quote"]["message"] = base64.b64encode(change(message)).decode()
    return json.dumps(doc).encode()


def options(sample: Sample) -> list[str]:
    at = AT.get(sample.name)
    return [*sample.options, *(["--at", at] if at else [])]


def write(tmp_path: Path, blob: bytes) -> str:
    path = tmp_path / "evidence.bin"
    path.write_bytes(blob)
    return str(path)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_real_sample_reaches_its_stated_outcome(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Act
    code, result = verify_json([write(tmp_path, sample.blob), *options(sample)], capsys)
    # Assert
    assert code == sample.code
    assert tuple(r.value for r in result.reasons) == sample.reasons
    for name, value in sample.claims.items():
        assert result.claims[name] == value, name
    if sample.tcb is not None and "tcb_status" in result.claims:
        assert result.claims["tcb_status"] == sample.tcb


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_text_output_names_status_tcb_and_every_reason(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["attest", "verify", write(tmp_path, sample.blob), *options(sample)], capsys)
    assert code == sample.code
    if sample.tcb is not None:
        assert f"tcb status:    {sample.tcb}" in out
    for reason in sample.reasons:
        assert f"[{reason}]" in out
    if sample.code == EXIT_AFFIRMING:
        assert "status:        affirming" in out and "verdict:       ACCEPTED" in out
        assert "instance-identity: 2 (affirming)" in out
    else:
        assert "verdict:       REJECTED" in out


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_flipped_signed_bit_is_rejected(
    sample: Sample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def flip(data: bytes, offset: int) -> bytes:
        return data[:offset] + bytes([data[offset] ^ 1]) + data[offset + 1 :]

    if sample.name == "tpm":  # the signed TPMS_ATTEST inside the JSON form
        blob = tpm_message(sample.blob, lambda m: flip(m, 40))
    else:
        blob = flip(sample.blob, sample.signed_offset)
    code, result = verify_json([write(tmp_path, blob), *options(sample)], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert result.status is Status.CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["signature_invalid"]


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("cut", ["truncated", "extended"])
def test_truncated_or_extended_blob_is_rejected(
    sample: Sample, cut: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(data: bytes) -> bytes:
        return data[:-1] if cut == "truncated" else data + b"\0"

    blob = tpm_message(sample.blob, change) if sample.name == "tpm" else change(sample.blob)
    code, result = verify_json([write(tmp_path, blob), *options(sample)], capsys)
    assert code == EXIT_CONTRAINDICATED
    want = "evidence_truncated" if cut == "truncated" else "evidence_trailing_data"
    assert [r.value for r in result.reasons] == [want]


def test_tpm_json_cut_short_is_malformed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blob = (DATA / "tpm" / "azure_vtpm_quote.json").read_bytes()
    code, result = verify_json([write(tmp_path, blob[: len(blob) // 2]), "--type", "tpm"], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["evidence_malformed"]


def test_tdx_v4_file_as_published_is_rejected_for_its_trailing_bytes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA / "tdx" / "tdx_prod_quote_SPR_E4.dat"
    code, result = verify_json([str(path), *options(SAMPLES[1])], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["evidence_trailing_data"]


def test_tpm_pcr_value_changed_breaks_the_digest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads((DATA / "tpm" / "azure_vtpm_quote.json").read_bytes())
    doc["tpm_quote"]["pcrs"][7] = "11" * 32  # was all zeros
    code, result = verify_json([write(tmp_path, json.dumps(doc).encode()), "--type", "tpm"], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["pcr_digest_mismatch"]


# --- policies, nonces, trust ------------------------------------------------------------


def test_sgx_with_the_readme_policy_is_accepted_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # expected.json: "mrenclave allow-list with the value above, debug allowed, OutOfDate
    # allowed": accept with warning.
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n[tee.sgx]\ndebug = "allow"\nwarn_tcb = ["OutOfDate"]\n'
        f'[tee.sgx.reference]\nmrenclave = ["{SGX["mrenclave"]}"]\n'
    )
    code, result = verify_json(
        [write(tmp_path, SAMPLES[0].blob), *options(SAMPLES[0]), "--policy", str(policy)], capsys
    )
    assert code == EXIT_WARNING
    assert result.status is Status.WARNING
    assert result.violations == ()
    assert "tcb_status: OutOfDate accepted with a warning" in result.warnings


def test_snp_with_its_measurement_allowed_is_affirming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = 1\n[tee.sev-snp]\ndebug = "allow"\n'
        f'[tee.sev-snp.reference]\nmeasurement = ["{SNP["measurement"]}"]\n'
    )
    # The VCEK given beside the report instead of the bundle.
    argv = [
        str(DATA / "sev-snp" / "attestation.bin"),
        "--type",
        "sev-snp",
        "--aux",
        f"vcek={DATA / 'sev-snp' / 'vcek.der'}",
        "--at",
        str(SNP["valid_at"]),
        "--policy",
        str(policy),
        "--nonce",
        "0102030405",
    ]
    code, result = verify_json(argv, capsys)
    assert code == EXIT_AFFIRMING
    assert result.status is Status.AFFIRMING
    assert result.code_identity is not None and result.code_identity.hex() == SNP["measurement"]
    assert result.claims["host_data"] == SNP["host_data"]


def test_snp_measurement_outside_the_policy_is_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'version = 1\n[tee.sev-snp]\ndebug = "allow"\n'
        f'[tee.sev-snp.reference]\nmeasurement = ["{"ab" * 48}"]\n'
    )
    argv = [*options(SAMPLES[3]), "--policy", str(policy)]
    code, result = verify_json([str(DATA / "sev-snp" / "attestation.bin"), *argv], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["measurement_not_allowed"]


def test_nonce_that_does_not_match_report_data_is_rejected(
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = [str(DATA / "psa" / "psa-2_0_0_sign1.bin"), *options(SAMPLES[5])]
    assert verify_json([*base, "--nonce", "00" * 64], capsys)[0] == EXIT_AFFIRMING
    code, result = verify_json([*base, "--nonce", "01"], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["nonce_mismatch"]


def test_nonce_with_a_public_key_checks_fedtees_binding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "client.pem"
    pem.write_bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    argv = [str(DATA / "sev-snp" / "attestation.bin"), *options(SAMPLES[3])]
    nonce = "0102030405" + "00" * 27  # what the report carries, but not bound to this key
    code, result = verify_json([*argv, "--nonce", nonce, "--public-key", str(pem)], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["report_data_mismatch"]
    code, _, err = run(
        ["attest", "verify", *argv, "--nonce", "01", "--public-key", str(pem)], capsys
    )
    assert code == 2 and "16 to 64 bytes" in err


def test_psa_without_its_key_is_an_untrusted_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, result = verify_json([str(DATA / "psa" / "psa-2_0_0_sign1.bin"), "--type", "psa"], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert result.status is Status.CONTRAINDICATED
    assert len(result.reasons) == 1


def test_policy_without_the_type_refuses_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\n[tee.tpm]\n")
    argv = [
        str(DATA / "psa" / "psa-2_0_0_sign1.bin"),
        *options(SAMPLES[5]),
        "--policy",
        str(policy),
    ]
    code, result = verify_json(argv, capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["tee_not_allowed"]


def test_sim_is_refused_by_default_and_loudly_accepted_when_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization

    from fedtee.attest.attesters.sim import SimAttester, SimPlatform, SimRoot

    root = SimRoot.generate()
    evidence = SimAttester(platform=SimPlatform.generate(root), measurement=bytes(48)).attest(
        bytes(64)
    )
    (tmp_path / "sim.bin").write_bytes(evidence.data)
    (tmp_path / "platform.der").write_bytes(evidence.aux["platform_cert"])
    (tmp_path / "root.pem").write_bytes(root.cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "policy.toml").write_text("version = 1\n[tee.sim]\nallow_simulated = true\n")
    argv = [
        str(tmp_path / "sim.bin"),
        "--type",
        "sim",
        "--aux",
        f"platform_cert={tmp_path / 'platform.der'}",
        "--trust",
        str(tmp_path / "root.pem"),
    ]
    code, result = verify_json(argv, capsys)
    assert code == EXIT_CONTRAINDICATED
    assert "sim_not_allowed" in [r.value for r in result.reasons]
    code, out, _ = run(
        ["attest", "verify", *argv, "--policy", str(tmp_path / "policy.toml")], capsys
    )
    assert code == EXIT_WARNING
    assert "SIMULATED TEE, not hardware-backed" in out
    assert "ACCEPTED WITH WARNINGS" in out
    # The same evidence without its root: nothing vouches for it.
    code, result = verify_json([*argv[:-2], "--policy", str(tmp_path / "policy.toml")], capsys)
    assert code == EXIT_CONTRAINDICATED
    assert [r.value for r in result.reasons] == ["chain_untrusted_root"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--at", "yesterday"],
        ["--aux", "novalue"],
        ["--aux", "vcek=/nonexistent/file"],
        ["--trust", "/nonexistent/file"],
        ["--nonce", "zz"],
        ["--collateral", "/nonexistent/dir"],
        ["--pcs-url", "file:///etc"],
    ],
)
def test_unusable_inputs_exit_2_with_a_message(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        [
            "attest",
            "verify",
            str(DATA / "sev-snp" / "attestation.bin"),
            "--type",
            "sev-snp",
            *extra,
        ],
        capsys,
    )
    assert code == 2
    assert out == ""
    assert err.startswith("fedtee: error:")


def test_malformed_policy_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("version = 1\n[tee.sgx]\nmrenclave_typo = []\n")
    code, _, err = run(
        [
            *("attest", "verify", str(DATA / "psa" / "psa-2_0_0_sign1.bin")),
            *("--type", "psa", "--policy", str(policy)),
        ],
        capsys,
    )
    assert code == 2 and "mrenclave_typo" in err


# --- show -------------------------------------------------------------------------------

SHOW = [
    ("sgx", DATA / "sgx" / "occlum_quote_v3.dat", "mrenclave", SGX["mrenclave"]),
    ("tdx", DATA / "tdx" / "quote_v5_sample.dat", "mrtd", TDX5["mrtd"]),
    ("sev-snp", DATA / "sev-snp" / "attestation.bin", "measurement", SNP["measurement"]),
    ("tpm", DATA / "tpm" / "azure_vtpm_quote.json", "clock", 1913548331),
    ("psa", DATA / "psa" / "psa-2_0_0_sign1.bin", None, None),
    ("psa", DATA / "psa" / "psa-iot-1_sign1.bin", None, None),
    ("cca", DATA / "cca" / "cca-example-token.cbor", None, None),
]


def _find(tree: object, name: str) -> list[object]:
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == name] + [
            x for v in tree.values() for x in _find(v, name)
        ]
    if isinstance(tree, list):
        return [x for v in tree for x in _find(v, name)]
    return []


@pytest.mark.parametrize(
    ("tee", "path", "name", "value"), SHOW, ids=[p.name for _, p, _, _ in SHOW]
)
def test_show_autodetects_and_prints_every_sample(
    tee: str, path: Path, name: str | None, value: object, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["attest", "show", str(path)], capsys)
    assert code == 0
    assert out.startswith(f"parsed as: {tee} ")
    code, out, _ = run(["attest", "show", str(path), "--type", tee, "--json"], capsys)
    assert code == 0
    fields = json.loads(out)
    assert fields["tee"] == tee
    if name is not None:
        assert value in _find(fields, name)


def test_show_tdx_v4_at_its_declared_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["attest", "show", write(tmp_path, _tdx_v4()), "--json"], capsys)
    assert code == 0
    assert TDX4["rtmr1"] in _find(json.loads(out), "rtmr1")


def test_show_rejects_what_no_parser_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["attest", "show", str(DATA / "sev-snp" / "vcek.der")], capsys)
    assert code == 1 and out == ""
    assert "does not parse" in err and "sev-snp: [" in err
    code, _, err = run(
        ["attest", "show", write(tmp_path, b"\xd2" + bytes(10)), "--type", "psa"], capsys
    )
    assert code == 1 and "psa: [evidence_" in err


def test_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["attest", "verify", "--help"])
    out = capsys.readouterr().out
    for option in ("--type", "--collateral", "--policy", "--nonce", "--at", "--json", "--trust"):
        assert option in out
    assert "3 warning" in out


@pytest.mark.slow
def test_installed_command_verifies_a_real_report() -> None:
    # One real process: the console script, its exit code and its output.
    fedtee = Path(sys.executable).parent / "fedtee"
    proc = subprocess.run(
        [
            str(fedtee),
            "attest",
            "verify",
            str(DATA / "sev-snp" / "attestation.bin"),
            "--type",
            "sev-snp",
            "--collateral",
            str(DATA / "sev-snp" / "collateral"),
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == EXIT_CONTRAINDICATED, proc.stderr
    assert f"measurement: {SNP['measurement']}" in proc.stdout
    assert "[debug_enabled]" in proc.stdout


def test_docs_list_every_attestation_reason_code() -> None:
    from fedtee.errors import Reason

    doc = (ROOT / "docs" / "attestation.md").read_text()
    names = list(Reason)
    area = names[names.index(Reason.EVIDENCE_TYPE_UNKNOWN) : names.index(Reason.TPM_RESET) + 1]
    missing = [r.value for r in [*area, Reason.NONCE_MISMATCH] if f"`{r.value}`" not in doc]
    assert missing == []


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(max_size=2048), cut=st.integers(min_value=0, max_value=6000))
def test_show_and_verify_never_crash_on_hostile_blobs(
    blob: bytes, cut: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Random bytes, and real samples cut and spliced with them: only exit codes, no traceback.
    for data in (blob, SAMPLES[cut % len(SAMPLES)].blob[:cut] + blob):
        path = write(tmp_path, data)
        assert run(["attest", "show", path], capsys)[0] in (0, 1, 2)
        for tee in ("sgx", "tdx", "sev-snp", "tpm", "psa", "cca", "sim"):
            code, out, _ = run(["attest", "verify", path, "--type", tee, "--json"], capsys)
            assert code in (EXIT_AFFIRMING, EXIT_CONTRAINDICATED, EXIT_WARNING)
            assert AttestationResult.from_json(out).status is not None
