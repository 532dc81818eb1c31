"""Where the project's shared test data lives: ../shared/data beside the repository.

XNAT_ML_SHARED_DATA points elsewhere. Tests needing it skip where it is absent, except in CI
(CI set), where its absence is a failure: a fresh clone there always has shared/ beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(
    os.environ.get("XNAT_ML_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
XNAT_COMMANDS = SHARED_DATA / "xnat-commands"


def require(path: Path) -> Path:
    """`path` under the shared data, or skip (fail in CI) naming what is missing."""
    if not path.exists():
        message = f"shared test data missing: {path} (set XNAT_ML_SHARED_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
