"""Fixtures for imaging tests: the shared RTSTRUCT conformance set, unpacked once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance import ARCHIVE, unpack
from shared_data import require


@pytest.fixture(scope="session")
def conformance_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(ARCHIVE)
    return unpack(tmp_path_factory.mktemp("rtstruct-conformance"))
