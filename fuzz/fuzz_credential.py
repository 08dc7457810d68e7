"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to fuzz/targets.py's `credential` target (see its docstring).

Run: scripts/fuzz.sh credential --seconds 60   (seeds: fuzz/corpus/credential/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("credential")
