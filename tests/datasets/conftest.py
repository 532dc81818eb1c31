"""Every dataset test gets its own cache root (fetched files, inspections): none reads or
fills the user's ~/.cache, and none sees what another one cached."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    root = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "xnat-ml"
