"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to fuzz/targets.py's `ear_jwt` target (see its docstring).

Run: scripts/fuzz.sh ear_jwt --seconds 60   (seeds: fuzz/corpus/ear_jwt/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("ear_jwt")
