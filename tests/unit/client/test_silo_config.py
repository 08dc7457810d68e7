"""client.toml [runtime] max_model_mib: the largest global model a silo client downloads."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.client.config import parse_client_config
from fedtee.errors import ConfigError

BASE = """
[client]
id = "silo-1"
[server]
address = "127.0.0.1:50051"
ca_cert = "ca.pem"
[tee]
type = "tpm"
[trainer]
target = "fedtee.client.examples.digits:DigitsTrainer"
"""


def test_default_is_one_gib_and_a_silo_raises_it() -> None:
    assert parse_client_config(BASE, base_dir=Path("/x")).max_model_bytes == 1 << 30
    raised = parse_client_config(BASE + "[runtime]\nmax_model_mib = 6144\n", base_dir=Path("/x"))
    assert raised.max_model_bytes == 6 << 30


@pytest.mark.parametrize("value", ["0", "65537", '"big"', "true"])
def test_out_of_range_or_not_an_integer_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="max_model_mib"):
        parse_client_config(BASE + f"[runtime]\nmax_model_mib = {value}\n", base_dir=Path("/x"))
