"""fedtee.localnet: a port that is free, and waiting for a listener with a typed failure."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from fedtee.errors import ConfigError
from fedtee.localnet import free_port, wait_for_port


def test_wait_returns_once_something_listens_on_a_free_port() -> None:
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        wait_for_port(port, timeout_s=5)


def test_a_process_that_exits_first_is_a_typed_error() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(ConfigError, match="exited early with code 3"):
        wait_for_port(free_port(), proc, timeout_s=5)


def test_nothing_listening_times_out_with_a_typed_error() -> None:
    with pytest.raises(ConfigError, match="did not listen"):
        wait_for_port(free_port(), timeout_s=0.3, what="the thing")
