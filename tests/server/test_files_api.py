"""Resources and files over real HTTP with unmodified xnatpy and pyxnat, plus hostile uploads."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import stat
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import xnat
from bombs import declared_tgz
from pyxnat import Interface

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def session_uri(xnat_server, project) -> str:
    """An MR session with scan 1 in a fresh project; its /data/projects/... URI."""
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/subjects/S1"
    http.put(base).raise_for_status()
    http.put(f"{base}/experiments/E1?xsiType=xnat:mrSessionData").raise_for_status()
    http.put(f"{base}/experiments/E1/scans/1?xsiType=xnat:mrScanData&type=T1").raise_for_status()
    return f"/data/projects/{project}/subjects/S1/experiments/E1"


def _alive(xnat_server) -> None:
    assert xnat_server.session().get(f"{xnat_server.url}/xapi/siteConfig/buildInfo").ok


def _files(xnat_server, resource_uri: str) -> dict[str, dict]:
    response = xnat_server.session().get(f"{xnat_server.url}{resource_uri}/files?format=json")
    if response.status_code == 404:
        return {}
    response.raise_for_status()
    return {row["path"]: row for row in response.json()["ResultSet"]["Result"]}


def _staging_empty(xnat_server) -> bool:
    staging = xnat_server.data_dir / "staging"
    return not staging.exists() or not any(staging.iterdir())


def test_xnatpy_upload_list_download_delete(xnat_server, project, session_uri, tmp_path):
    payload = os.urandom(300_000)
    src = tmp_path / "image.nii.gz"
    src.write_bytes(payload)
    folder = tmp_path / "tree"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.bin").write_bytes(os.urandom(5000))

    with xnat.connect(xnat_server.url, user=xnat_server.user,
                      password=xnat_server.password) as session:
        experiment = session.projects[project].subjects["S1"].experiments["E1"]
        scan = experiment.scans["1"]
        resource = scan.create_resource("NIFTI", format="NIFTI")
        resource.upload(src, "image.nii.gz", file_content="IMAGE", file_tags="t1")
        resource.upload_dir(folder)  # xnatpy sends a .tar.gz with extract=true

        resource.clearcache()
        files = {f.path: f for f in resource.files.values()}
        assert set(files) == {"image.nii.gz", "a.txt", "sub/b.bin"}
        assert files["image.nii.gz"].digest == hashlib.md5(payload).hexdigest()
        assert (resource.file_count, resource.file_size) == (3, len(payload) + 5 + 5000)

        files["image.nii.gz"].download(tmp_path / "back.nii.gz", verbose=False)  # checks md5
        assert (tmp_path / "back.nii.gz").read_bytes() == payload

        resource.download_dir(tmp_path / "zip", verbose=False)
        out = tmp_path / "zip" / "E1/scans/1/resources/NIFTI/files"  # XNAT's zip layout
        assert (out / "image.nii.gz").read_bytes() == payload
        assert (out / "sub" / "b.bin").read_bytes() == (folder / "sub/b.bin").read_bytes()

        experiment.download(tmp_path / "session.zip", verbose=False)  # .../scans/ALL/files
        with zipfile.ZipFile(tmp_path / "session.zip") as archive:
            assert archive.read("E1/scans/1/resources/NIFTI/files/image.nii.gz") == payload

        files["a.txt"].delete()
        resource.clearcache()
        assert {f.path for f in resource.files.values()} == {"image.nii.gz", "sub/b.bin"}
        assert resource.id  # xnatpy needs its id cached to forget the object after deleting it
        resource.delete()
        scan.clearcache()
        assert "NIFTI" not in scan.resources
    assert _staging_empty(xnat_server)


def test_pyxnat_put_get_and_zip(xnat_server, project, tmp_path):
    data = os.urandom(70_000)
    src = tmp_path / "model.pt"
    src.write_bytes(data)
    others = [tmp_path / "cfg" / name for name in ("a.json", "b.json")]
    others[0].parent.mkdir()
    for path in others:
        path.write_text(path.name)

    interface = Interface(server=xnat_server.url, user=xnat_server.user,
                          password=xnat_server.password)
    resource = interface.select.project(project).resource("ML_MODELS")
    resource.file("model.pt").put(str(src), format="PT", content="MODEL")  # POST, inbody=true
    resource.put([str(p) for p in others])  # a zip (pyxnat drops the folder), extracted
    assert resource.exists()
    assert sorted(resource.files().get()) == ["a.json", "b.json", "model.pt"]

    got = resource.file("model.pt").get(str(tmp_path / "got.pt"))
    assert Path(got).read_bytes() == data
    assert resource.file("model.pt").size() == str(len(data))
    (tmp_path / "dl").mkdir()
    members = resource.get(str(tmp_path / "dl"), extract=True)
    assert sorted(Path(m).name for m in members) == ["a.json", "b.json", "model.pt"]
    resource.file("model.pt").delete()
    assert sorted(resource.files().get()) == ["a.json", "b.json"]
    interface.disconnect()


def test_overwrite_and_duplicates_are_conflicts(xnat_server, project):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/resources/R"
    assert http.put(f"{base}?format=TXT").status_code == 200
    assert http.put(base).status_code == 409  # duplicate label
    assert http.put(f"{base}/files/x.txt", data=b"one").ok
    assert http.put(f"{base}/files/x.txt", data=b"two").status_code == 409
    assert http.get(f"{base}/files/x.txt").content == b"one"
    assert http.put(f"{base}/files/x.txt?overwrite=true", data=b"two").ok
    assert http.get(f"{base}/files/x.txt").content == b"two"
    assert http.put(f"{base}/files/x.txt/inner", data=b"z").status_code == 409  # file as folder
    assert http.delete(f"{base}/files/missing.txt").status_code == 404


def test_multipart_upload_and_resource_by_id(xnat_server, project):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/archive/projects/{project}/resources/MP"
    response = http.post(f"{base}/files/doc.txt", files={"file": ("doc.txt", b"multi")})
    assert response.ok, response.text
    rows = http.get(f"{xnat_server.url}/data/projects/{project}/resources?format=json").json()
    resource_id = rows["ResultSet"]["Result"][0]["xnat_abstractresource_id"]
    by_id = f"{xnat_server.url}/data/projects/{project}/resources/{resource_id}/files/doc.txt"
    assert http.get(by_id).content == b"multi"


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("fine.txt", b"ok")
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    return buf.getvalue()


@pytest.mark.parametrize(
    "body",
    [
        b"PK\x03\x04 this is not really a zip",
        _zip({"a.txt": b"a" * 5000})[:-40],  # truncated
        _zip({"ok.txt": b"ok", "../../escape.txt": b"evil"}),
        _zip({"ok.txt": b"ok", "/tmp/absolute.txt": b"evil"}),
        _zip({"ok.txt": b"ok", "sub\\..\\..\\x.txt": b"evil"}),
        _symlink_zip(),
    ],
    ids=["corrupt", "truncated", "slip", "absolute", "backslash", "symlink"],
)
def test_hostile_zip_is_refused_whole(xnat_server, project, body):
    http = xnat_server.session()
    base = f"/data/projects/{project}/resources/Z"
    response = http.put(f"{xnat_server.url}{base}/files/up.zip?extract=true", data=body)
    assert response.status_code == 400, response.text
    assert response.text.count("\n") == 1  # one line, no stack trace
    assert _files(xnat_server, base) == {}
    assert not list(xnat_server.data_dir.rglob("escape.txt"))
    assert not list(xnat_server.data_dir.rglob("absolute.txt"))
    assert _staging_empty(xnat_server)
    _alive(xnat_server)


def test_archive_bomb_is_413_and_leaves_nothing(xnat_server, project):
    """A 200-byte .tar.gz promising 1 TiB: refused from its header, before anything inflates."""
    http = xnat_server.session()
    base = f"/data/projects/{project}/resources/Z"
    url = f"{xnat_server.url}{base}/files/up.tar.gz?extract=true"
    response = http.put(url, data=declared_tgz(2**40))
    assert response.status_code == 413, response.text
    assert "up.tar.gz: archive expands to more than 256.0 GiB" in response.text
    assert response.text.count("\n") == 1
    assert _files(xnat_server, base) == {}
    assert _staging_empty(xnat_server)
    _alive(xnat_server)


def test_serve_options_set_the_extraction_limits(start_xnat_server):
    server = start_xnat_server("limits", ["--extract-max-files", "5", "--extract-max-gb", "0.001"])
    http = server.session()
    http.put(f"{server.url}/data/projects/LIMITS").raise_for_status()
    base = f"{server.url}/data/projects/LIMITS/resources/Z/files"
    files = {f"{n}.txt": b"x" for n in range(6)}
    many = http.put(f"{base}/many.zip?extract=true", data=_zip(files))
    assert many.status_code == 413 and "more than 5 files" in many.text
    big = http.put(f"{base}/big.zip?extract=true", data=_zip({"a.bin": b"\0" * 2**21}))
    assert big.status_code == 413 and "expands to more than 1073741 bytes" in big.text
    del files["5.txt"]
    fine = http.put(f"{base}/fine.zip?extract=true", data=_zip(files))
    assert fine.status_code == 200, fine.text


def _raw_request(xnat_server, method: str, path: str, body: bytes = b"") -> int:
    """Send the path byte for byte (requests would normalise `..` away)."""
    conn = http.client.HTTPConnection("127.0.0.1", xnat_server.port, timeout=30)
    import base64

    token = base64.b64encode(f"{xnat_server.user}:{xnat_server.password}".encode()).decode()
    conn.putrequest(method, path, skip_accept_encoding=True)
    conn.putheader("Authorization", f"Basic {token}")
    conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


@pytest.mark.parametrize(
    "tail",
    ["../../../escape.txt", "%2e%2e/%2e%2e/escape.txt", "..%2F..%2Fescape.txt",
     "a/%2e%2e/%2e%2e/escape.txt", "..%5c..%5cescape.txt", "x%00.txt", "%2Fetc%2Fescape.txt",
     "a//b.txt"],
)
def test_traversal_in_file_uri_is_refused(xnat_server, project, tail):
    base = f"/data/projects/{project}/resources/T"
    for method in ("PUT", "GET", "DELETE"):
        status = _raw_request(xnat_server, method, f"{base}/files/{tail}", b"evil")
        assert status in (400, 404), (method, tail, status)
    assert not list(xnat_server.data_dir.parent.rglob("escape.txt"))
    assert _files(xnat_server, base) == {}
    _alive(xnat_server)


def test_interrupted_upload_leaves_nothing(xnat_server, project):
    base = f"/data/projects/{project}/resources/CUT"
    import base64

    token = base64.b64encode(f"{xnat_server.user}:{xnat_server.password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", xnat_server.port)) as sock:
        sock.sendall(
            f"PUT {base}/files/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {token}\r\n"
            f"Content-Length: 10000000\r\n\r\n".encode() + b"x" * 100_000
        )
    deadline = time.monotonic() + 10
    while not _staging_empty(xnat_server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _staging_empty(xnat_server)
    assert _files(xnat_server, base) == {}
    _alive(xnat_server)


def test_collaborator_reads_but_cannot_write(xnat_server, project):
    http = xnat_server.session()
    base = f"{xnat_server.url}/data/projects/{project}/resources/R"
    assert http.put(f"{base}/files/a.txt", data=b"a").ok
    xnat_server.add_user("h2reader", "pw-reader", project, "Collaborator")
    xnat_server.add_user("h2outsider", "pw-outsider")
    reader = xnat_server.session("h2reader", "pw-reader")
    assert reader.get(f"{base}/files/a.txt").content == b"a"
    assert reader.put(f"{base}/files/b.txt", data=b"b").status_code == 403
    assert reader.delete(f"{base}/files/a.txt").status_code == 403
    outsider = xnat_server.session("h2outsider", "pw-outsider")
    assert outsider.get(f"{base}/files/a.txt").status_code == 403
    assert outsider.get(f"{base}/files?format=zip").status_code == 403
    assert xnat_server.session("admin", "wrong").get(f"{base}/files").status_code == 401


def test_large_file_streams_both_ways(xnat_server, project, tmp_path):
    size = 64 * 1024 * 1024
    digest = hashlib.md5()

    def body():
        block = os.urandom(1 << 20)
        for _ in range(size >> 20):
            digest.update(block)
            yield block

    http = xnat_server.session()
    url = f"{xnat_server.url}/data/projects/{project}/resources/BIG/files/big.bin"
    assert http.put(url, data=body()).ok  # chunked: no Content-Length
    response = http.get(url, stream=True)
    assert int(response.headers["Content-Length"]) == size
    back = hashlib.md5()
    for chunk in response.iter_content(1 << 20):
        back.update(chunk)
    assert back.hexdigest() == digest.hexdigest()
    response = http.get(f"{url.rsplit('/files/', 1)[0]}/files?format=zip", stream=True)
    zipped = tmp_path / "big.zip"
    with open(zipped, "wb") as out:
        for chunk in response.iter_content(1 << 20):
            out.write(chunk)
    with zipfile.ZipFile(zipped) as archive:
        assert archive.getinfo(f"{project}/resources/BIG/files/big.bin").file_size == size


def test_readers_see_an_extracted_upload_all_at_once(xnat_server, project):
    entries = {f"part{n // 10}/f{n:03d}.bin": os.urandom(200_000) for n in range(60)}
    body = _zip(entries)
    http = xnat_server.session()
    base = f"/data/projects/{project}/resources/ATOMIC"
    seen: set[int] = set()
    with ThreadPoolExecutor(1) as pool:
        upload = pool.submit(
            xnat_server.session().put, f"{xnat_server.url}{base}/files/up.zip?extract=true",
            data=body,
        )
        while not upload.done():
            seen.add(len(_files(xnat_server, base)))
            time.sleep(0.01)
        assert upload.result().ok
    seen.add(len(_files(xnat_server, base)))
    assert seen <= {0, len(entries)} and len(entries) in seen
    got = http.get(f"{xnat_server.url}{base}/files/part3/f031.bin").content
    assert got == entries["part3/f031.bin"]
