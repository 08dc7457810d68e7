"""The one atheris driver every ``fuzz/fuzz_<name>.py`` calls.

libFuzzer feeds bytes to :data:`targets.TARGETS[name]`; a :class:`fedtee.errors.FedteeError`
is the parser rejecting bad input (fine), anything else escaping is reported by atheris as
an uncaught exception (a crash, with the input saved as ``crash-<sha1>``). Hangs past
``-timeout`` and memory past ``-rss_limit_mb`` are crashes too.
"""

from __future__ import annotations

import contextlib
import sys


def main(name: str) -> None:
    import atheris  # type: ignore[import-untyped]

    # Coverage feedback for fedtee's own code only: instrumenting the whole interpreter
    # (cryptography, numpy, protobuf) slows every input for no new paths in our parsers.
    with atheris.instrument_imports(include=["fedtee", "targets"]):
        import targets

        from fedtee.errors import FedteeError

    target = targets.TARGETS[name]

    def one_input(data: bytes) -> None:
        # Typed rejection is the parser working; anything else propagates to atheris.
        with contextlib.suppress(FedteeError):
            target(data)

    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
