"""[server] trim_interval_s: 1 s by default, 0 turns it off, bounded, and handed to the
server's round driver (fedtee.server.app.FederationServer.trimmer)."""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.server import DEFAULT_TRIM_INTERVAL_S, build_server, parse_server_config
from fedtee.errors import ConfigError

_glibc = sys.platform == "linux" and "libc.so.6" in (ctypes.util.find_library("c") or "")


def _text(fed: Path, extra: str) -> str:
    text = server_toml(InitOptions(directory=fed, federation_id="fed", with_sim=True))
    return text.replace("[server]\n", f"[server]\n{extra}\n", 1)


def test_server_toml_trim_interval_defaults_to_a_second_and_reaches_the_server(
    fed: Path,
) -> None:
    default = build_server(parse_server_config(_text(fed, ""), base_dir=fed))
    assert DEFAULT_TRIM_INTERVAL_S == 1.0
    assert default.config.trim_interval_s == 1.0
    assert default.trimmer.interval_s == (1.0 if _glibc else 0.0)
    off = build_server(parse_server_config(_text(fed, "trim_interval_s = 0"), base_dir=fed))
    assert off.trimmer.interval_s == 0.0
    often = build_server(parse_server_config(_text(fed, "trim_interval_s = 0.25"), base_dir=fed))
    assert often.config.trim_interval_s == 0.25


@pytest.mark.parametrize("value", ["-1", "3601", '"1"', "nan", "inf", "true"])
def test_a_bad_trim_interval_is_a_config_error(fed: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="trim_interval_s"):
        parse_server_config(_text(fed, f"trim_interval_s = {value}"), base_dir=fed)
