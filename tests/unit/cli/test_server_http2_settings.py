"""[server] http2_bdp_probe: parsed, off by default, and handed to the server's gRPC options."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.server import build_server, parse_server_config
from fedtee.errors import ConfigError


def _text(fed: Path, extra: str) -> str:
    text = server_toml(InitOptions(directory=fed, federation_id="fed", with_sim=True))
    return text.replace("[server]\n", f"[server]\n{extra}\n", 1)


def test_bdp_probing_is_off_unless_asked_for(fed: Path) -> None:
    off = build_server(parse_server_config(_text(fed, ""), base_dir=fed))
    on = build_server(parse_server_config(_text(fed, "http2_bdp_probe = true"), base_dir=fed))
    assert off.config.http2_bdp_probe is False
    assert on.config.http2_bdp_probe is True


@pytest.mark.parametrize("value", ["1", '"true"', "0"])
def test_a_mistyped_bdp_probe_is_a_config_error(fed: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="http2_bdp_probe"):
        parse_server_config(_text(fed, f"http2_bdp_probe = {value}"), base_dir=fed)
