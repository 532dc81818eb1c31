"""Fixtures for the training tests: the templates, the spleen Model Zoo bundle, tiny data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from shared_data import SHARED_DATA, require
from template_paths import TISSUES


@pytest.fixture
def spleen_bundle(tmp_path: Path) -> Path:
    """A private copy of the real spleen bundle's configs, as published."""
    source = require(SHARED_DATA / "bundles" / "spleen_ct_segmentation")
    return Path(shutil.copytree(source, tmp_path / "spleen_ct_segmentation"))


@pytest.fixture
def tissues_model(tmp_path: Path) -> Path:
    """A private copy of the sample-tissues-cpu model folder."""
    return Path(shutil.copytree(TISSUES, tmp_path / "sample-tissues-cpu"))
