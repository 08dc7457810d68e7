"""The insecure evaluation switch exists only in code: no server.toml reaches it."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedtee.cli.server import parse_server_config
from fedtee.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "server.toml"


def test_the_example_server_config_parses_and_the_switch_is_not_a_key() -> None:
    text = EXAMPLE.read_text()
    parse_server_config(text, base_dir=EXAMPLE.parent)  # the baseline is valid
    assert "insecure" not in text


@pytest.mark.parametrize(
    "extra",
    [
        "\n[insecure]\nno_attestation = true\n",
        "\ninsecure_no_attestation = true\n",
    ],
)
def test_an_insecure_setting_in_server_toml_is_refused(extra: str) -> None:
    text = EXAMPLE.read_text()
    # A top-level key must come before the first table to stay top-level in TOML.
    text = extra + text if "[" not in extra else text + extra
    tomllib.loads(text)  # valid TOML: the refusal is the config parser's
    with pytest.raises(ConfigError):
        parse_server_config(text, base_dir=EXAMPLE.parent)


def test_every_attestation_table_key_is_checked() -> None:
    text = EXAMPLE.read_text()
    if "[attestation]" not in text:
        pytest.skip("the example has no [attestation] table")
    bad = text.replace("[attestation]\n", "[attestation]\ninsecure_no_attestation = true\n", 1)
    with pytest.raises(ConfigError):
        parse_server_config(bad, base_dir=EXAMPLE.parent)
