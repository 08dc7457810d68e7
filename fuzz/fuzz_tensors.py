"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to safetensors headers and payloads (fedtee.tensors.header_from_prefix,
parse_header, decode).

Run: scripts/fuzz.sh tensors --seconds 60   (seeds: fuzz/corpus/tensors/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("tensors")
