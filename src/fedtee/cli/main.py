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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every group, or with group ``only``: a command imports just its own
    group's module, so ``fedtee client start`` never loads the server's dependencies (the IoT
    profile's import budget, docs/iot.md)."""
    parser = argparse.ArgumentParser(
        prog="fedtee",
        description=(
            "Federated learning in which every client proves with hardware (a TEE) who it is "
            "and what code it runs."
        ),
    )
    parser.add_argument("--version", action="version", version=f"fedtee {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _GROUPS if only is None else (only,):
        importlib.import_module(f"fedtee.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list[0] if args_list else None
    parser = build_parser(command if command in _GROUPS else None)
    args = parser.parse_args(args_list)
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
