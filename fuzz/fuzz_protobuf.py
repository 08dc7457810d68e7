"""atheris harness for one fedtee parser.

Feeds libFuzzer's bytes to wire messages: protobuf decode then fedtee.wire.serde *_from_proto
(first byte picks the type).

Run: scripts/fuzz.sh protobuf --seconds 60   (seeds: fuzz/corpus/protobuf/)
"""

from __future__ import annotations

from _harness import main

if __name__ == "__main__":
    main("protobuf")
