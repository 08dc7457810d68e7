"""client.toml [runtime] profile, encoding and topk_fraction."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedtee.client.config import parse_client_config
from fedtee.errors import ConfigError

BASE = """
[client]
id = "d1"
[server]
address = "127.0.0.1:1"
ca_cert = "ca.pem"
[tee]
type = "tpm"
[trainer]
target = "fedtee.client.examples.iot:IotTrainer"
[runtime]
"""


def _parse(runtime: str = "", profile: str | None = None) -> tuple[str, int, str, float]:
    config = parse_client_config(BASE + runtime, base_dir=Path("/"), profile_override=profile)
    return config.profile, config.chunk_bytes, config.encoding, config.topk_fraction


def test_default_profile_sends_plain_updates_in_1_mib_chunks() -> None:
    assert _parse() == ("default", 1 << 20, "safetensors", 0.01)


def test_iot_profile_defaults_to_small_chunks_and_int8_unless_the_file_says_otherwise() -> None:
    assert _parse('profile = "iot"') == ("iot", 65536, "int8", 0.01)
    assert _parse(profile="iot") == ("iot", 65536, "int8", 0.01)
    explicit = 'profile = "iot"\nchunk_bytes = 4096\nencoding = "topk+f16"\ntopk_fraction = 0.1'
    assert _parse(explicit) == ("iot", 4096, "topk+f16", 0.1)
    assert _parse('profile = "iot"', profile="default")[0] == "default"  # --profile wins


@pytest.mark.parametrize(
    "runtime",
    [
        'profile = "tiny"',
        'encoding = "zstd"',
        "encoding = 8",
        "topk_fraction = 0",
        "topk_fraction = 1.5",
        'topk_fraction = "half"',
    ],
)
def test_bad_runtime_values_are_config_errors(runtime: str) -> None:
    with pytest.raises(ConfigError):
        _parse(runtime)


def test_the_example_client_toml_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "client.toml"
    config = parse_client_config(example.read_text(), base_dir=example.parent)
    assert config.encoding == "safetensors"
