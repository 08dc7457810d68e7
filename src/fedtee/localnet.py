"""Loopback helpers for the programs fedtee starts itself (demo, evaluation runs, benches).

A port picked here is free when picked; the program that binds it next may still lose a race
to another process, which then fails loudly when it cannot listen.
"""

from __future__ import annotations

import socket
import subprocess
import time

from fedtee.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    timeout_s: float,
    what: str = "the server",
) -> None:
    """Return once something accepts connections on 127.0.0.1:``port``.

    Raises :class:`ConfigError` when ``proc`` (the process expected to listen) exits first,
    or when ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"{what} exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise ConfigError(f"{what} did not listen on port {port} within {timeout_s:.0f}s")
