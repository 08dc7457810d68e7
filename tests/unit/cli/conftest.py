"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from fedtee.cli.init import InitOptions, init_federation


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A federation directory made by ``fedtee init`` (sim TEE), shared by a test module."""
    directory = tmp_path_factory.mktemp("fed")
    init_federation(
        InitOptions(directory=directory, federation_id="fed", with_sim=True), now=datetime.now(UTC)
    )
    return directory
