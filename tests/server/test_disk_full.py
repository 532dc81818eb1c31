"""A full disk, for real: the server's data dir on a 24 MiB tmpfs, so that the files and SQLite
both hit ENOSPC. Refused writes are 507 with the free and needed bytes and leave nothing
behind; reads and deletes keep working at 100 %."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from archive_state import assert_consistent
from dicom_samples import zip_bytes
from servers import XnatServer
from small_disk import fill, free_bytes, small_tmpfs

PROJECT = "FULL"


@pytest.fixture(scope="module")
def mount(tmp_path_factory):
    with small_tmpfs(tmp_path_factory.mktemp("small-fs")) as where:
        yield where


@pytest.fixture(scope="module")
def server(mount):
    """A server whose data folder (and log) sit inside the small file system."""
    srv = XnatServer(mount / "data")
    srv.start()
    srv.session().put(f"{srv.url}/data/projects/{PROJECT}").raise_for_status()
    yield srv
    srv.stop()


def _clear(mount: Path) -> None:
    for filler in mount.glob("filler-*"):
        filler.unlink()


def test_body_larger_than_the_disk_is_507_before_writing(server, mount):
    url = f"{server.url}/data/projects/{PROJECT}/resources/R/files/big.bin"
    big = 40 * 2**20
    reply = server.session().put(url, data=b"\0" * big)
    assert reply.status_code == 507, reply.text
    assert f"needs {big} bytes" in reply.text and "bytes are free" in reply.text
    assert_consistent(server.data_dir)


def test_expansion_that_does_not_fit_is_507(server, mount):
    body = zip_bytes({f"f{n}.bin": b"\0" * (8 * 2**20) for n in range(4)})  # 32 MiB, deflated
    url = f"{server.url}/data/projects/{PROJECT}/resources/Z/files/z.zip?extract=true"
    reply = server.session().put(url, data=body)
    assert reply.status_code == 507, reply.text
    assert "bytes are free" in reply.text
    assert_consistent(server.data_dir)


def test_chunked_body_that_does_not_fit_is_507(server, mount):
    def chunks():
        for _ in range(40):
            yield b"\1" * 2**20

    url = f"{server.url}/data/projects/{PROJECT}/resources/R/files/stream.bin"
    reply = server.session().put(url, data=chunks())
    assert reply.status_code == 507, reply.text
    assert "bytes are free" in reply.text  # waitress buffers it, so its length is known
    assert_consistent(server.data_dir)


def test_reads_and_deletes_work_at_100_percent(server, mount):
    http = server.session()
    base = f"{server.url}/data/projects/{PROJECT}/resources/KEEP/files"
    for n in range(3):
        assert http.put(f"{base}/k{n}.bin", data=os.urandom(100_000)).ok
    fill(mount)
    try:
        assert free_bytes(mount) < 4096
        assert http.put(f"{base}/more.bin", data=b"x" * 10_000).status_code == 507
        created = http.put(f"{server.url}/data/projects/{PROJECT}/subjects/FULLSUBJ")
        assert created.status_code in (201, 507), created.text  # never a 500
        assert http.get(f"{base}?format=json").ok
        assert len(http.get(f"{base}/k0.bin").content) == 100_000
        assert http.delete(f"{base}/k1.bin").status_code == 200
        assert http.delete(f"{server.url}/data/projects/{PROJECT}/resources/KEEP").ok
        assert http.get(f"{base}?format=json").status_code == 404
        assert_consistent(server.data_dir)
    finally:
        _clear(mount)


def test_upload_that_exactly_fills_the_disk_leaves_nothing_half_done(server, mount):
    http = server.session()
    url = f"{server.url}/data/projects/{PROJECT}/resources/EXACT/files/exact.bin"
    fill(mount, leave=1_000_000)
    try:
        size = free_bytes(mount)
        reply = http.put(url, data=b"\2" * size)
        assert reply.status_code in (200, 507), reply.text
        listed = http.get(url.rsplit("/", 1)[0] + "?format=json")
        names = [r["Name"] for r in listed.json()["ResultSet"]["Result"]] if listed.ok else []
        assert names == (["exact.bin"] if reply.status_code == 200 else [])
        assert_consistent(server.data_dir)
        if reply.status_code == 200:
            assert http.delete(url).ok
    finally:
        _clear(mount)
    assert_consistent(server.data_dir)


def test_overwrite_refused_for_space_keeps_the_old_file(server, mount):
    http = server.session()
    url = f"{server.url}/data/projects/{PROJECT}/resources/OLD/files/keep.bin"
    assert http.put(url, data=b"old bytes").ok
    fill(mount, leave=200_000)
    try:
        reply = http.put(url + "?overwrite=true", data=b"\3" * 2_000_000)
        assert reply.status_code == 507, reply.text
        assert http.get(url).content == b"old bytes"
        assert_consistent(server.data_dir)
    finally:
        _clear(mount)


def test_logout_on_a_nearly_full_disk_keeps_the_reserve(server, mount):
    """Only deletes of archive files may spend the reserve: they free the space to refill it,
    a logout (also a DELETE) frees none, so the reserve it gave up was lost for good."""
    http = server.session()
    base = f"{server.url}/data/projects/{PROJECT}/resources/RESERVE/files"
    assert http.put(f"{base}/r.bin", data=b"r" * 1000).ok
    assert http.delete(f"{base}/r.bin").ok  # with room: the reserve is (re)filled after it
    reserve = server.data_dir / "reserve.bin"
    size = reserve.stat().st_size
    assert size == 4 * 2**20
    fill(mount, leave=2**20)
    try:
        assert free_bytes(mount) < size
        login = http.get(f"{server.url}/data/JSESSION")
        assert login.ok, login.text
        assert http.delete(f"{server.url}/data/JSESSION").status_code == 200
        assert reserve.exists() and reserve.stat().st_size == size
    finally:
        _clear(mount)
