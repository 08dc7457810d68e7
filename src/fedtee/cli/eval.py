"""``fedtee eval``: evaluate TEEs for federated learning, from measurements taken here.

Each subcommand lives in its own module under ``fedtee.cli`` with ``register(subparsers)``;
list it in ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

_SUBCOMMANDS: tuple[str, ...] = ("eval_report", "eval_attacks")


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "eval",
        help="measure and report what each TEE guarantees and costs",
        description=(
            "Evaluate trusted execution environments for federated learning on this machine: "
            "run the attack suite, take measurements and write reports."
        ),
    )
    commands = group.add_subparsers(dest="eval_command", metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"fedtee.cli.{name}").register(commands)

    def _help(args: argparse.Namespace) -> int:
        group.print_help()
        return 2

    group.set_defaults(handler=_help)
