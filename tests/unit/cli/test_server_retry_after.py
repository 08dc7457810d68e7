"""[rounds] retry_after_s: parsed, bounded, and handed to the round manager as milliseconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.server import parse_server_config
from fedtee.errors import ConfigError


def _text(extra: str) -> str:
    text = server_toml(InitOptions(directory=Path("fed"), federation_id="f"))
    return text.replace("[rounds]\n", f"[rounds]\n{extra}\n", 1)


def test_retry_after_defaults_to_half_a_second_and_can_be_raised() -> None:
    assert parse_server_config(_text(""), base_dir=Path("fed")).retry_after_s == 0.5
    assert (
        parse_server_config(_text("retry_after_s = 30"), base_dir=Path("fed")).retry_after_s == 30.0
    )


@pytest.mark.parametrize("value", ["0", "0.001", "-1", "7200", '"30"'])
def test_retry_after_out_of_range_or_mistyped_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_server_config(_text(f"retry_after_s = {value}"), base_dir=Path("fed"))
