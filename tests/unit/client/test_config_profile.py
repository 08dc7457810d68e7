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
        "malloc_arenas = -1",
        "malloc_arenas = 65",
        'malloc_arenas = "two"',
        "malloc_arenas = true",
        "max_busy_s = -1",
        "max_busy_s = 1e9",
        'max_busy_s = "long"',
    ],
)
def test_bad_runtime_values_are_config_errors(runtime: str) -> None:
    with pytest.raises(ConfigError):
        _parse(runtime)


def _arenas(runtime: str = "", profile: str | None = None) -> int:
    config = parse_client_config(BASE + runtime, base_dir=Path("/"), profile_override=profile)
    return config.malloc_arenas


def test_max_busy_s_defaults_to_ten_minutes() -> None:
    base = parse_client_config(BASE, base_dir=Path("/"))
    assert base.max_busy_s == 600.0
    assert parse_client_config(BASE + "max_busy_s = 30", base_dir=Path("/")).max_busy_s == 30.0


def test_malloc_arenas_default_per_profile_and_the_file_wins() -> None:
    assert _arenas() == 2
    assert _arenas(profile="iot") == 1
    assert _arenas('profile = "iot"\nmalloc_arenas = 4') == 4
    assert _arenas("malloc_arenas = 0") == 0  # glibc's default


def test_fedtee_init_client_toml_leaves_the_profile_its_defaults(tmp_path: Path) -> None:
    # A generated client.toml used to set chunk_bytes, which overrode the iot profile's.
    from fedtee.cli.init import InitOptions, init_federation

    files = init_federation(InitOptions(directory=tmp_path, federation_id="f", with_sim=True))
    client_toml = next(p for p in sorted(tmp_path.glob("client*.toml")))
    config = parse_client_config(client_toml.read_text(), base_dir=tmp_path, profile_override="iot")
    assert files
    assert (config.chunk_bytes, config.encoding, config.malloc_arenas) == (65536, "int8", 1)


def test_the_example_client_toml_parses() -> None:
    example = Path(__file__).resolve().parents[3] / "examples" / "client.toml"
    config = parse_client_config(example.read_text(), base_dir=example.parent)
    assert config.encoding == "safetensors"
