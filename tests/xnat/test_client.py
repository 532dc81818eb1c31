"""The client against a real `xnat-ml serve` over loopback HTTP."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from flaky_proxy import FlakyProxy

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat import (
    connect,
    download_resource,
    list_experiments,
    list_files,
    list_resources,
    list_rows,
    upload_directory,
)
from xnat_ml.xnat.uris import project_uri, resource_uri


@pytest.fixture
def session(xnat_server):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


def _tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _payload(folder: Path, version: str = "v1", size: int = 1_000_000) -> Path:
    """Files in sub-folders, one empty, one with a unicode name, 1 MB that zip cannot shrink."""
    (folder / "nested" / "deeper").mkdir(parents=True, exist_ok=True)
    (folder / "readme.txt").write_text(f"payload {version}\n")
    (folder / "nested" / "data.bin").write_bytes(random.Random(version).randbytes(size))
    (folder / "nested" / "deeper" / "Ünïcode név.json").write_text('{"a": 1}', encoding="utf-8")
    (folder / "empty.dat").write_bytes(b"")
    return folder


def test_connect_from_environment(xnat_server, monkeypatch):
    monkeypatch.setenv("XNAT_HOST", xnat_server.url)
    monkeypatch.setenv("XNAT_USER", xnat_server.user)
    monkeypatch.setenv("XNAT_PASS", xnat_server.password)
    with connect() as opened:
        assert opened.logged_in_user == xnat_server.user
        assert opened.get("/xapi/siteConfig/buildInfo").ok


@pytest.mark.parametrize(
    ("url", "user", "password", "problem"),
    [
        (None, None, None, "no address given"),
        ("127.0.0.1:8080", "admin", "x", "must start with http"),
        ("SERVER", "admin", None, "no password given"),
        ("SERVER", "admin", "wrong-password", "login failed for user admin"),
        ("CLOSED", "admin", "admin", "cannot connect"),
    ],
)
def test_connect_failures_are_one_clear_line(xnat_server, monkeypatch, url, user, password,
                                             problem):  # fmt: skip
    for name in ("XNAT_HOST", "XNAT_USER", "XNAT_PASS"):
        monkeypatch.delenv(name, raising=False)
    if url == "SERVER":
        url = xnat_server.url
    elif url == "CLOSED":
        from xnat_ml.server.process import free_port

        url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(XnatMlError, match=problem) as caught:
        connect(url, user, password)
    assert "\n" not in str(caught.value)


def test_listing_is_one_request_with_columns(xnat_server, session, project):
    base = project_uri(project)
    for s in range(3):
        session.put(f"{base}/subjects/S{s}")
        for e in range(2):
            xsi = "xnat:mrSessionData" if e == 0 else "xnat:ctSessionData"
            session.put(f"{base}/subjects/S{s}/experiments/S{s}_E{e}", query={"xsiType": xsi})
    requests_made = []
    session.interface.hooks["response"].append(lambda r, *a, **k: requests_made.append(r.url))
    columns = ("ID", "label", "subject_label")
    rows = list_experiments(session, project, "xnat:mrSessionData", columns)
    assert len(requests_made) == 1
    assert sorted(r["label"] for r in rows) == ["S0_E0", "S1_E0", "S2_E0"]
    assert all({"ID", "label", "subject_label"} <= set(r) for r in rows)
    assert len(list_experiments(session, project)) == 6


def test_upload_then_download_is_byte_identical(session, project, tmp_path):
    src = _payload(tmp_path / "src")
    parent = project_uri(project)
    uri = upload_directory(session, parent, "ML_TEST", src, format="BIN", content="payload")
    assert uri == resource_uri(parent, "ML_TEST")
    [row] = [r for r in list_resources(session, parent) if r["label"] == "ML_TEST"]
    assert int(row["file_count"]) == 4 and row["format"] == "BIN"
    names = sorted(r["Name"] for r in list_files(session, uri))
    assert names == sorted(Path(p).name for p in _tree(src))
    written = download_resource(session, uri, tmp_path / "out")
    assert len(written) == 4
    assert _tree(tmp_path / "out") == _tree(src)


def test_upload_twice_gives_the_same_resource(session, project, tmp_path):
    src = _payload(tmp_path / "src")
    parent = project_uri(project)
    uri = upload_directory(session, parent, "TWICE", src)
    first = sorted((r["Name"], r["Size"], r["digest"]) for r in list_files(session, uri))
    upload_directory(session, parent, "TWICE", src)
    again = sorted((r["Name"], r["Size"], r["digest"]) for r in list_files(session, uri))
    assert again == first
    assert [r["label"] for r in list_resources(session, parent)].count("TWICE") == 1


def test_rejected_upload_leaves_the_previous_resource_whole(session, project, tmp_path):
    parent = project_uri(project)
    uri = upload_directory(session, parent, "ATOMIC", _payload(tmp_path / "v1", "v1"))
    before = _tree(_download(session, uri, tmp_path / "before"))
    v2 = _payload(tmp_path / "v2", "v2")  # same names, other bytes ...
    (v2 / "extra.txt").write_text("new file")
    (v2 / "bad\x01name.txt").write_text("a name the server refuses")  # ... and one bad name
    with pytest.raises(XnatMlError, match="ATOMIC"):
        upload_directory(session, parent, "ATOMIC", v2)
    assert _tree(_download(session, uri, tmp_path / "after")) == before


def test_rejected_upload_of_a_new_resource_leaves_none(session, project, tmp_path):
    parent = project_uri(project)
    src = _payload(tmp_path / "src")
    (src / "bad\x02.txt").write_text("refused")
    with pytest.raises(XnatMlError):
        upload_directory(session, parent, "NEVER", src)
    assert "NEVER" not in [r["label"] for r in list_resources(session, parent)]


def _download(session, uri: str, dest: Path) -> Path:
    download_resource(session, uri, dest)
    return dest


@pytest.fixture
def proxy(xnat_server):
    flaky = FlakyProxy(int(xnat_server.url.rsplit(":", 1)[1]))
    yield flaky
    flaky.close()


def test_connection_cut_mid_upload_leaves_nothing_half_filled(xnat_server, proxy, project,
                                                              tmp_path):  # fmt: skip
    parent = project_uri(project)
    with connect(proxy.url, xnat_server.user, xnat_server.password) as via_proxy:
        uri = upload_directory(via_proxy, parent, "CUT", _payload(tmp_path / "v1", "v1"))
        before = _tree(_download(via_proxy, uri, tmp_path / "before"))
        proxy.arm("cut_request")
        with pytest.raises(XnatMlError, match="cannot reach"):
            upload_directory(via_proxy, parent, "CUT", _payload(tmp_path / "v2", "v2"), retries=1)
    assert proxy.faults_done == 1
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as direct:
        assert _tree(_download(direct, uri, tmp_path / "after")) == before


@pytest.mark.parametrize("fault", ["cut_request", "drop_response"])
def test_upload_retries_after_a_lost_connection(xnat_server, proxy, project, tmp_path, fault):
    parent = project_uri(project)
    src = _payload(tmp_path / "src")
    with connect(proxy.url, xnat_server.user, xnat_server.password) as via_proxy:
        proxy.arm(fault)
        uri = upload_directory(via_proxy, parent, "RETRIED", src)
    assert proxy.faults_done == 1
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as direct:
        assert _tree(_download(direct, uri, tmp_path / "out")) == _tree(src)
        assert [r["label"] for r in list_resources(direct, parent)].count("RETRIED") == 1


def test_download_retries_after_a_lost_answer(xnat_server, proxy, project, tmp_path):
    src = _payload(tmp_path / "src")
    with connect(proxy.url, xnat_server.user, xnat_server.password) as via_proxy:
        uri = upload_directory(via_proxy, project_uri(project), "FETCHED", src)
        proxy.match = b"format=zip"
        proxy.arm("drop_response")
        download_resource(via_proxy, uri, tmp_path / "out")
    assert proxy.faults_done == 1
    assert _tree(tmp_path / "out") == _tree(src)


def test_listing_of_something_that_is_not_a_table_is_one_clear_error(session, project):
    with pytest.raises(XnatMlError, match="not a ResultSet table"):
        list_rows(session, project_uri(project))  # one object: {"items": [...]}, no ResultSet
    with pytest.raises(XnatMlError, match="/xapi/siteConfig/siteId"):
        list_rows(session, "/xapi/siteConfig/siteId")  # plain text, not JSON
    with pytest.raises(XnatMlError, match="HTTP 404"):
        list_rows(session, f"{project_uri(project)}/subjects/NOBODY/experiments")
