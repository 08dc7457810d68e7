"""``fedtee policy add-reference`` / ``show``: values checked, comments kept, edits proven."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtee.cli._toml_edit import append_string
from fedtee.cli.main import main
from fedtee.cli.policy import add_reference, expected_sizes, normalise_value
from fedtee.errors import ConfigError, PolicyError

H32 = "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68"
H48 = (
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
    "6bdf8a9ece31a5a608eb0cf2e4872b01"
)
H48B = (
    "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f"
    "22fc00b8dcd404bc10d5e119d7215cbb"
)

RICH = f"""\
# Production policy for the hospital federation.
# Owner: security team; reviewed 2026-11-01.
version = 1

[tee.sev-snp]          # confidential VMs on Genoa
debug = "forbid"
accepted_tcb = ["UpToDate"]   # no OutOfDate hosts

[tee.sev-snp.reference]
# Each value: OVMF build + kernel + cmdline, see docs/deploy/sev-snp.md
measurement = [
  "{H48}", # image 2026-10
]

[tee.sev-snp.min_svn]
"tcb.snp" = 8  # Genoa SNP firmware 1.55.x

[tee.tdx]
accepted_tcb = ["UpToDate"]
[tee.tdx.reference]
mrtd = ["{H48B}"] # TDVF 2025
rtmr0 = []

# --- simulated clients, for the staging federation only ---
[tee.sim]
allow_simulated = true
"""


def run(*argv: str) -> int:
    return main(list(argv))


def doc(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text())


def lines_kept(before: str, after: str) -> bool:
    """Every line of ``before`` is still in ``after``, in the same order."""
    it = iter(after.splitlines())
    return all(any(line == other for other in it) for line in before.splitlines())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


# --- add-reference through the CLI ---------------------------------------------------------


def test_creates_a_policy_file_with_the_reference(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "new.toml"

    code = run(
        "policy", "add-reference", str(path), "--tee", "sgx", "--name", "mrenclave",
        "--value", H32.upper(), "--comment", "fedtee-client 0.1.0, gramine 1.8",
    )  # fmt: skip

    assert code == 0
    assert doc(path) == {"version": 1, "tee": {"sgx": {"reference": {"mrenclave": [H32]}}}}
    assert "# fedtee-client 0.1.0, gramine 1.8" in path.read_text()
    out = capsys.readouterr()
    assert f"+= {H32}" in out.out
    assert "no [tee.sgx] table" in out.err


def test_appends_to_multiline_array_keeping_every_comment(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    code = run(
        "policy", "add-reference", str(path), "--tee", "sev-snp", "--name", "measurement",
        "--value", H48B, "--comment", "image 2026-11",
    )  # fmt: skip

    text = path.read_text()
    assert code == 0
    assert lines_kept(RICH, text)
    assert doc(path)["tee"]["sev-snp"]["reference"]["measurement"] == [H48, H48B]
    assert f'  "{H48B}",  # image 2026-11\n]' in text
    # Nothing else moved: the document equals the old one plus one value.
    expected = tomllib.loads(RICH)
    expected["tee"]["sev-snp"]["reference"]["measurement"].append(H48B)
    assert doc(path) == expected


def test_appends_to_single_line_array_inline(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    run("policy", "add-reference", str(path), "--tee", "tdx", "--name", "mrtd", "--value", H48)

    text = path.read_text()
    assert f'mrtd = ["{H48B}", "{H48}"] # TDVF 2025' in text
    assert doc(path)["tee"]["tdx"]["reference"]["mrtd"] == [H48B, H48]


def test_single_line_array_with_comment_becomes_one_value_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    run(
        "policy", "add-reference", str(path), "--tee", "tdx", "--name", "mrtd",
        "--value", H48, "--comment", "TDVF 2026",
    )  # fmt: skip

    text = path.read_text()
    assert f'mrtd = [\n  "{H48B}",\n  "{H48}",  # TDVF 2026\n] # TDVF 2025' in text
    assert doc(path)["tee"]["tdx"]["reference"]["mrtd"] == [H48B, H48]


def test_empty_array_gets_its_first_value(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    run("policy", "add-reference", str(path), "--tee", "tdx", "--name", "rtmr0", "--value", H48)

    assert doc(path)["tee"]["tdx"]["reference"]["rtmr0"] == [H48]
    assert lines_kept(RICH.replace("rtmr0 = []\n", ""), path.read_text())


def test_new_name_goes_into_the_existing_section(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    run("policy", "add-reference", str(path), "--tee", "tdx", "--name", "rtmr1", "--value", H48)

    text = path.read_text()
    assert lines_kept(RICH, text)
    assert text.index("rtmr1 = [") < text.index("# --- simulated clients")
    assert doc(path)["tee"]["tdx"]["reference"]["rtmr1"] == [H48]
    assert doc(path)["tee"]["sim"] == {"allow_simulated": True}


def test_new_table_goes_after_its_tee_section(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    run("policy", "add-reference", str(path), "--tee", "sim", "--name", "measurement",
        "--value", H48)  # fmt: skip

    text = path.read_text()
    assert lines_kept(RICH, text)
    assert text.index("[tee.sim]") < text.index("[tee.sim.reference]")
    assert doc(path)["tee"]["sim"] == {
        "allow_simulated": True,
        "reference": {"measurement": [H48]},
    }


def test_psa_component_names_are_quoted(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 1\n[tee.psa]\n")

    run("policy", "add-reference", str(path), "--tee", "psa", "--name", "sw:BL", "--value", H32)

    assert '"sw:BL" = [' in path.read_text()
    assert doc(path)["tee"]["psa"]["reference"] == {"sw:BL": [H32]}


def test_dotted_reference_keys_are_extended(tmp_path: Path) -> None:
    text = f'version = 1\n[tee.sgx]\ndebug = "forbid"\nreference.mrenclave = ["{H32}"]\n'
    path = write(tmp_path, text)

    run("policy", "add-reference", str(path), "--tee", "sgx", "--name", "mrsigner", "--value", H32)

    assert f'reference.mrsigner = [\n  "{H32}",\n]' in path.read_text()
    assert doc(path)["tee"]["sgx"]["reference"] == {"mrenclave": [H32], "mrsigner": [H32]}


def test_inline_table_is_refused_and_file_untouched(tmp_path: Path, capsys: Any) -> None:
    text = f'version = 1\n[tee.sgx]\nreference = {{ mrenclave = ["{H32}"] }}\n'
    path = write(tmp_path, text)

    code = run(
        "policy", "add-reference", str(path), "--tee", "sgx", "--name", "mrsigner", "--value", H32
    )

    assert code == 2
    assert path.read_text() == text
    assert "policy_invalid" in capsys.readouterr().err


def test_existing_value_is_not_duplicated(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, RICH)

    code = run("policy", "add-reference", str(path), "--tee", "sev-snp", "--name",
               "measurement", "--value", "0x" + H48.upper())  # fmt: skip

    assert code == 0
    assert path.read_text() == RICH
    assert "already allows" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("tee", "name", "value", "words"),
    [
        ("sgx", "mrenclave", H48, "32 bytes"),
        ("tdx", "mrtd", H32, "48 bytes"),
        ("sev-snp", "measurement", H32, "48 bytes"),
        ("sev-snp", "host_data", H48, "32 bytes"),
        ("tpm", "pcr7", H48, "32 bytes"),
        ("tpm", "pcr24", H32, "not a tpm measurement"),
        ("sgx", "mrtd", H32, "not a sgx measurement"),
        ("sim", "measurement", "abc", "hex digits"),
        ("sim", "measurement", "zz" * 48, "hex digits"),
        ("cca", "rim", "00" * 20, "32 or 48 or 64 bytes"),
    ],
)
def test_bad_values_are_refused_and_file_untouched(
    tmp_path: Path, capsys: Any, tee: str, name: str, value: str, words: str
) -> None:
    path = write(tmp_path, RICH)

    code = run("policy", "add-reference", str(path), "--tee", tee, "--name", name, "--value", value)

    assert code == 2
    assert path.read_text() == RICH
    assert words in capsys.readouterr().err


@pytest.mark.parametrize(
    "text",
    ["version = 2\n", "[tee.sgx]\n", "version = 1\n[tee.sgx\n", 'version = 1\ntee = "sgx"\n'],
    ids=["future-version", "no-version", "bad-toml", "tee-not-a-table"],
)
def test_bad_policy_files_are_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)

    code = run("policy", "add-reference", str(path), "--tee", "sgx", "--name", "mrenclave",
               "--value", H32)  # fmt: skip

    assert code == 2
    assert path.read_text() == text


def test_comment_cannot_inject_toml(tmp_path: Path) -> None:
    path = write(tmp_path, RICH)

    code = run(
        "policy", "add-reference", str(path), "--tee", "tdx", "--name", "mrtd", "--value", H48,
        "--comment", 'x\n[tee.sim]\nallow_simulated = true',
    )  # fmt: skip

    assert code == 2
    assert path.read_text() == RICH


# --- show ----------------------------------------------------------------------------------


def test_show_lists_tees_and_reference_values(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, RICH)

    code = run("policy", "show", str(path))

    out = capsys.readouterr().out
    assert code in (0, 2)  # 2 only if the policy engine rejects this file
    assert "[tee.sev-snp]" in out
    assert "reference measurement: 1 allowed" in out
    assert H48 in out
    assert "min_svn tcb.snp >= 8" in out
    assert "policy engine:" in out


def test_show_json(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, RICH)

    run("policy", "show", str(path), "--json")

    shown = json.loads(capsys.readouterr().out)
    assert shown["policy"] == tomllib.loads(RICH)


def test_show_missing_file_is_a_config_error(tmp_path: Path, capsys: Any) -> None:
    assert run("policy", "show", str(tmp_path / "absent.toml")) == 2
    assert "config_invalid" in capsys.readouterr().err


# --- the library functions -----------------------------------------------------------------


def test_sizes_table() -> None:
    assert expected_sizes("sgx", "mrsigner") == (32,)
    assert expected_sizes("tdx", "rtmr3") == (48,)
    assert expected_sizes("cca", "sw:RMM") == (32, 48, 64)
    assert normalise_value("tpm", "pcr23", "0X" + H32.upper()) == H32
    with pytest.raises(ConfigError):
        expected_sizes("nitro", "pcr0")


def test_append_string_refuses_non_string_arrays() -> None:
    with pytest.raises(PolicyError):
        append_string("version = 1\n[t]\nx = 3\n", ("t",), "x", "aa")
    with pytest.raises(PolicyError):
        append_string("version = 1\n[t]\nx = [1, 2]\n", ("t",), "x", "aa")


_NAMES = st.sampled_from(["mrenclave", "mrsigner"])
_VALUES = st.binary(min_size=32, max_size=32).map(bytes.hex)
_COMMENTS = st.one_of(st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E),
                                         max_size=20))  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(
    start=st.sampled_from(
        [
            "version = 1\n",
            "version = 1 # v\n[tee.sgx] # enclave\ndebug = 'forbid'\n",
            f'version = 1\n[tee.sgx.reference]\nmrenclave = ["{H32}"]\n[tee.sim]\n',
            f'version = 1\n[tee.sgx.reference]\nmrenclave = [\n  # keep\n  "{H32}"\n]\n',
            f"version = 1\n[tee]\nsgx.reference.mrsigner = ['{H32}', ]\n",
            f'version = 1\n[tee.sgx.reference]\nmrenclave = [\n  "{H32}"  # keep\n]\n',
            "version = 1\r\n[tee.sgx.reference] # v\r\nmrsigner = [ # keep\r\n]\r\n",
            f"version = 1\n[tee.sgx.reference]\nmrenclave = ['{H32}',\n]\n[tee.sgx.min_svn]\n",
        ]
    ),
    ops=st.lists(st.tuples(_NAMES, _VALUES, _COMMENTS), min_size=1, max_size=5),
)
def test_any_sequence_of_additions_is_exactly_reflected(
    start: str, ops: list[tuple[str, str, str | None]]
) -> None:
    text = start
    expected = tomllib.loads(start)
    for name, value, comment in ops:
        text, _ = add_reference(text, tee="sgx", name=name, value=value, comment=comment)
        ref = expected.setdefault("tee", {}).setdefault("sgx", {}).setdefault("reference", {})
        if value not in ref.setdefault(name, []):
            ref[name].append(value)
        assert tomllib.loads(text) == expected
    for comment in ("# v", "# enclave", "# keep"):
        assert comment not in start or comment in text


def test_value_after_an_element_with_comment_and_no_comma() -> None:
    text = "version = 1\n[tee.sgx.reference]\nmrenclave = [\n  'aa',\n  'bb'  # last\n]\n"

    out = append_string(text, ("tee", "sgx", "reference"), "mrenclave", H32, "new")

    assert out == (
        "version = 1\n[tee.sgx.reference]\nmrenclave = [\n  'aa',\n  'bb',  # last\n"
        f'  "{H32}",  # new\n]\n'
    )


def _engine_available() -> bool:
    return importlib.util.find_spec("fedtee.attest.policy") is not None


@pytest.mark.skipif(not _engine_available(), reason="fedtee.attest.policy not written yet")
def test_show_prints_the_engines_effective_settings(tmp_path: Path, capsys: Any) -> None:
    path = write(
        tmp_path,
        "version = 1\n[tee.sim]\nallow_simulated = true\nmax_evidence_age_s = 300\n",
    )

    code = run("policy", "show", str(path))

    out = capsys.readouterr().out
    assert code == 0
    assert "policy engine: ok" in out
    assert "effective sim: debug forbidden; accepted_tcb UpToDate" in out
    assert "max_evidence_age 300s; SIMULATED TEE ACCEPTED" in out


def test_show_prints_what_the_server_does_after_a_tpm_reset(tmp_path: Path, capsys: Any) -> None:
    default = write(tmp_path, 'version = 1\n[tee.tpm]\naccepted_tcb = ["NotApplicable"]\n')
    assert run("policy", "show", str(default)) == 0
    assert "max_evidence_age none; on_reset reject" in capsys.readouterr().out
    reenrol = tmp_path / "reenrol.toml"
    reenrol.write_text('version = 1\n[tee.tpm]\non_reset = "reenrol"\n')
    assert run("policy", "show", str(reenrol)) == 0
    assert "on_reset reenrol" in capsys.readouterr().out


@pytest.mark.skipif(not _engine_available(), reason="fedtee.attest.policy not written yet")
def test_show_fails_on_a_policy_the_engine_rejects(tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, "version = 1\n[tee.sgx]\ndebgu = 'forbid'\n")

    code = run("policy", "show", str(path))

    captured = capsys.readouterr()
    assert code == 2
    assert "rejected" in captured.out
    assert "policy_invalid" in captured.err
