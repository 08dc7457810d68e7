"""``fedtee server start`` with the trust features OFF, for bench_trust_cost.py only.

Runs the normal CLI (``python bench/_serve_untrusted.py server start --config ...``) after
switching on, in this process only, the evaluation-only seams the attack contrast uses
(``EnrolmentGate(insecure_accept_any=True)``: any evidence is admitted unverified;
``RoundManager(check_receipts=False)``: no receipt signature or digest check) and making
ledger appends after the genesis entry no-ops (no write, no fsync). Everything else (TLS,
state store, artifacts, aggregation) is the production path. Never a way to run a real
federation: there is no config key for any of this.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import fedtee.ledger.log as ledger_log
from fedtee.server.gate import EnrolmentGate
from fedtee.server.rounds import RoundManager

_write_line = ledger_log._append_line


def _genesis_only(path: Path, line: bytes) -> None:
    if not Path(path).exists() or Path(path).stat().st_size == 0:
        _write_line(path, line)


def _forcing(init: Any, **forced: Any) -> Any:
    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **{**kwargs, **forced})

    return wrapper


def main() -> int:
    ledger_log._append_line = _genesis_only
    EnrolmentGate.__init__ = _forcing(EnrolmentGate.__init__, insecure_accept_any=True)
    RoundManager.__init__ = _forcing(RoundManager.__init__, check_receipts=False)
    from fedtee.cli.main import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
