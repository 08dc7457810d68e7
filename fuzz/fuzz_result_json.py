"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to fuzz/targets.py's `result_json` target (see its docstring).

Run: scripts/fuzz.sh result_json --seconds 60   (seeds: fuzz/corpus/result_json/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("result_json")
