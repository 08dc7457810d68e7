"""``fedtee server start`` with a fault: the process SIGKILLs itself the first time the round
manager reaches a named point (``fedtee.server.rounds.FAULT_*``), i.e. between two writes.

    python tests/faults/_faulty_server.py POINT --config server.toml
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from fedtee.cli.server import build_server, parse_server_config


def main() -> None:
    point, flag, config = sys.argv[1:4]
    assert flag == "--config"
    path = Path(config)
    server = build_server(parse_server_config(path.read_text(), base_dir=path.parent))

    def fault(reached: str) -> None:
        if reached == point:
            print(f"fault: SIGKILL at {point}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    server._fault_hook = fault  # the seam FederationServer passes to its RoundManager
    server.start()
    print("faulty server listening", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
