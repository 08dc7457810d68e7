"""[server] max_transfers, transfer_wait_s and transfer_idle_s: parsed, 8 slots, a 60 s wait
and a 120 s idle cut by default, bounded, and handed to the server's slots and service;
[server] fold_threads, handed to the server's FedAvg; send_chunk_bytes (512 KiB) and
trim_interval_s (1 s; 0: never), bounded and handed to the server."""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, server_toml
from fedtee.cli.server import DEFAULT_TRIM_INTERVAL_S, build_server, parse_server_config
from fedtee.errors import ConfigError
from fedtee.server.slots import (
    DEFAULT_MAX_TRANSFERS,
    DEFAULT_SEND_CHUNK_BYTES,
    DEFAULT_TRANSFER_IDLE_S,
    DEFAULT_TRANSFER_WAIT_S,
    RESERVED_WORKERS,
)
from fedtee.server.strategy import MAX_FOLD_THREADS, FedAvg, default_fold_threads

_glibc = sys.platform == "linux" and "libc.so.6" in (ctypes.util.find_library("c") or "")


def _text(fed: Path, extra: str) -> str:
    text = server_toml(InitOptions(directory=fed, federation_id="fed", with_sim=True))
    return text.replace("[server]\n", f"[server]\n{extra}\n", 1)


def test_max_transfers_defaults_and_reaches_the_slots(fed: Path) -> None:
    default = build_server(parse_server_config(_text(fed, ""), base_dir=fed))
    assert default.config.max_transfers == DEFAULT_MAX_TRANSFERS == 8
    assert default.slots.capacity == 8
    # The wait queue leaves 4 of the 128 workers to calls that are not transfers.
    assert default.slots.max_waiting == 128 - 8 - RESERVED_WORKERS
    assert default.config.transfer_wait_s == DEFAULT_TRANSFER_WAIT_S == 60.0
    assert default.config.transfer_idle_s == DEFAULT_TRANSFER_IDLE_S == 120.0
    unlimited = build_server(parse_server_config(_text(fed, "max_transfers = 0"), base_dir=fed))
    assert unlimited.slots.capacity == 0
    four = build_server(parse_server_config(_text(fed, "max_transfers = 4"), base_dir=fed))
    assert four.slots.capacity == 4
    many = build_server(parse_server_config(_text(fed, "max_transfers = 4096"), base_dir=fed))
    assert many.slots.capacity == 4096
    assert many.slots.max_waiting == 0  # more slots than workers: nothing waits
    quick = build_server(parse_server_config(_text(fed, "transfer_wait_s = 0"), base_dir=fed))
    assert quick.config.transfer_wait_s == 0.0
    idle = build_server(parse_server_config(_text(fed, "transfer_idle_s = 5"), base_dir=fed))
    assert idle.config.transfer_idle_s == 5.0


def test_fold_threads_default_to_one_a_core_and_can_be_set(fed: Path) -> None:
    default = build_server(parse_server_config(_text(fed, ""), base_dir=fed))
    assert isinstance(default.strategy, FedAvg)
    assert default.strategy.fold_threads == default_fold_threads()
    one = build_server(parse_server_config(_text(fed, "fold_threads = 1"), base_dir=fed))
    assert isinstance(one.strategy, FedAvg)
    assert one.strategy.fold_threads == 1
    most = build_server(
        parse_server_config(_text(fed, f"fold_threads = {MAX_FOLD_THREADS}"), base_dir=fed)
    )
    assert isinstance(most.strategy, FedAvg)
    assert most.strategy.fold_threads == MAX_FOLD_THREADS


def test_send_chunk_bytes_defaults_to_512_kib_and_reaches_the_server(fed: Path) -> None:
    default = build_server(parse_server_config(_text(fed, ""), base_dir=fed))
    assert DEFAULT_SEND_CHUNK_BYTES == 512 * 1024
    assert default.config.send_chunk_bytes == 512 * 1024
    small = build_server(parse_server_config(_text(fed, "send_chunk_bytes = 262144"), base_dir=fed))
    assert small.config.send_chunk_bytes == 262144


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


_BAD_VALUES = [
    *(("transfer_idle_s", v) for v in ["0", "0.5", "3601", '"60"', "nan"]),
    *(("transfer_wait_s", v) for v in ["-1", "601", '"10"', "nan", "inf"]),
    *(("max_transfers", v) for v in ["-1", "4097", '"8"', "2.5"]),
    *(("fold_threads", v) for v in ["-1", "9", '"2"', "2.0", "true"]),
    *(("send_chunk_bytes", v) for v in ["16383", "1048577", "0", '"262144"', "262144.0", "true"]),
    *(("trim_interval_s", v) for v in ["-1", "3601", '"1"', "nan", "inf", "true"]),
]


@pytest.mark.parametrize(("key", "value"), _BAD_VALUES)
def test_a_bad_transfer_setting_is_a_config_error_naming_its_key(
    fed: Path, key: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        parse_server_config(_text(fed, f"{key} = {value}"), base_dir=fed)
