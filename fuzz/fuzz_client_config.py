"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to fuzz/targets.py's `client_config` target (see its docstring).

Run: scripts/fuzz.sh client_config --seconds 60   (seeds: fuzz/corpus/client_config/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("client_config")
