"""Fixtures for imaging tests: the shared RTSTRUCT conformance set, unpacked once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from conformance import ARCHIVE, unpack


@pytest.fixture(scope="session")
def conformance_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ARCHIVE.exists():
        pytest.skip(f"conformance archive {ARCHIVE} not present")
    return unpack(tmp_path_factory.mktemp("rtstruct-conformance"))
