"""Crash consistency of deletes: the server is SIGKILLed after a delete moved the object's
folders out of sight but before the catalogue commit (`delete.hidden`), and after the commit
but before the bytes went (`delete.committed`). After a restart the object either still has
every file, whole, or is gone with its files; trash/ is empty and the archive check is clean."""

from __future__ import annotations

import hashlib
import os

import pytest
import requests
from archive_state import assert_consistent

PROJECT = "DELF"


@pytest.fixture
def server(start_xnat_server):
    srv = start_xnat_server("delete-faults")
    srv.session().put(f"{srv.url}/data/projects/{PROJECT}").raise_for_status()
    return srv


def _session_with_files(server, subject: str, sessions: int = 1) -> dict[str, str]:
    """A subject with ``sessions`` MR sessions, each with one uploaded file: url -> md5."""
    http, base = server.session(), f"{server.url}/data/projects/{PROJECT}/subjects/{subject}"
    http.put(base).raise_for_status()
    files = {}
    for n in range(sessions):
        label = f"{subject}_E{n}"
        http.put(f"{base}/experiments/{label}?xsiType=xnat:mrSessionData").raise_for_status()
        url = f"{base}/experiments/{label}/resources/NOTES/files/n.bin"
        body = os.urandom(20_000)
        http.put(url, data=body).raise_for_status()
        files[url] = hashlib.md5(body).hexdigest()
    return files


def _crash(server, point: str, url: str) -> None:
    server.stop()
    server.env["XNAT_ML_FAULT"] = point
    server.start()
    with pytest.raises(requests.ConnectionError):
        server.session().delete(url, timeout=60)
    assert server.process.wait(timeout=30) != 0
    server.stop()
    del server.env["XNAT_ML_FAULT"]
    server.start()


def _trash(server) -> list[str]:
    root = server.data_dir / "trash"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


@pytest.mark.parametrize("what", ["experiment", "subject"])
def test_a_delete_killed_before_its_commit_keeps_every_file(server, what):
    files = _session_with_files(server, "S1", sessions=2)
    subject = f"{server.url}/data/projects/{PROJECT}/subjects/S1"
    _crash(server, "delete.hidden", f"{subject}/experiments/S1_E0" if what == "experiment"
           else subject)  # fmt: skip
    http = server.session()
    for url, md5 in files.items():
        got = http.get(url)
        assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == md5, url
    assert _trash(server) == []
    assert not (server.data_dir / "quarantine").exists()
    assert_consistent(server.data_dir)
    assert http.delete(f"{subject}/experiments/S1_E0").status_code == 200  # the retry works
    assert http.get(f"{subject}/experiments/S1_E0").status_code == 404


def test_a_delete_killed_after_its_commit_leaves_no_bytes(server):
    files = _session_with_files(server, "S2")
    subject = f"{server.url}/data/projects/{PROJECT}/subjects/S2"
    _crash(server, "delete.committed", subject)
    http = server.session()
    assert http.get(subject).status_code == 404
    assert all(http.get(url).status_code == 404 for url in files)
    assert _trash(server) == []
    assert not (server.data_dir / "quarantine").exists()
    assert_consistent(server.data_dir)


def test_trash_without_its_record_is_quarantined_not_deleted(server):
    server.stop()
    stray = server.data_dir / "trash" / "older" / "0"
    stray.mkdir(parents=True)
    (stray / "kept.bin").write_bytes(b"someone's bytes")
    server.start()
    assert _trash(server) == []
    kept = list((server.data_dir / "quarantine").rglob("kept.bin"))
    assert [p.read_bytes() for p in kept] == [b"someone's bytes"]
