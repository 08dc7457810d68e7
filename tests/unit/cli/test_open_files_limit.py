"""fedtee server start raises its soft open-files limit to the hard limit: a round close maps
every accepted update at once (one descriptor each), beside one per TLS connection."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

resource = pytest.importorskip("resource")

_PROBE = """
import json, resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, soft), hard))
from fedtee.cli.server import OPEN_FILES_CAP, raise_open_files_limit
got = raise_open_files_limit()
now = resource.getrlimit(resource.RLIMIT_NOFILE)
expected = OPEN_FILES_CAP if hard == resource.RLIM_INFINITY else hard
print(json.dumps({"got": got, "soft": now[0], "hard": now[1], "expected": expected}))
"""


def test_the_soft_limit_is_raised_to_the_hard_limit() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["got"] == found["soft"] == found["expected"]
    assert found["soft"] > 256


def test_a_limit_already_at_the_hard_limit_is_left_alone() -> None:
    from fedtee.cli.server import raise_open_files_limit

    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    if before[0] != before[1]:
        pytest.skip("this process's soft limit is below its hard limit")
    assert raise_open_files_limit() == before[0]
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == before
