"""The ``fedtee`` command. The CLI layer is the only place that reads files, env and argv.

Each command group lives in its own module exposing ``register(subparsers)``; add new groups
to ``_GROUPS``. A handler returns the process exit code. Any :class:`FedteeError` that reaches
here is printed with its reason code and exits 2; nothing prints a traceback at a user.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fedtee import __version__
from fedtee.errors import FedteeError

# Module names under fedtee.cli, each with register(subparsers: argparse._SubParsersAction).
_GROUPS: tuple[str, ...] = (
    "ledger",
    "policy",
    "init",
    "client",
    "server",
    "demo",
    "eval",
    "attest",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedtee",
        description=(
            "Federated learning in which every client proves with hardware (a TEE) who it is "
            "and what code it runs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fedtee {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS:
        importlib.import_module(f"fedtee.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        code: int = handler(args)
    except FedteeError as exc:
        print(f"fedtee: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
