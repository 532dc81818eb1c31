"""Every dataset test gets its own cache root (fetched files, inspections): none reads or
fills the user's ~/.cache, and none sees what another one cached."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    root = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "xnat-ml"


@pytest.fixture
def xnat(xnat_server):
    """An xnatpy session on the test server, as admin."""
    from xnat_ml.xnat import connect

    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


@pytest.fixture
def labelled(xnat, project):
    """A fresh project with the sample label map (Grey Matter=1, White Matter=2)."""
    xnat.put(f"/data/projects/{project}/resources/ML_MODELS/files/region2MaskValueMap.txt",
             data=b"Grey Matter=1\nWhite Matter=2\n", query={"overwrite": "true"},
             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    return project
