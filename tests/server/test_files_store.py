"""The pure file-handling layer: client path checks, archive unpacking, streamed zips."""

from __future__ import annotations

import hashlib
import io
import stat
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from bombs import declared_tgz

from xnat_ml.server.formats.zipfiles import (
    ArchiveError,
    ArchiveTooLarge,
    ExtractLimits,
    extract_archive,
    stream_zip,
)
from xnat_ml.server.store.filestore import FileStore, UnsafePathError, safe_relpath


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/..",
        "a\\..\\x",
        "a\x00b",
        "a//b",
        "a/",
        ".",
        "x" * 256,
        "tab\tname",
    ],
)
def test_safe_relpath_refuses_hostile_paths(raw: str) -> None:
    with pytest.raises(UnsafePathError):
        safe_relpath(raw)


def test_safe_relpath_keeps_ordinary_and_unicode_names() -> None:
    assert safe_relpath("./a/b.dcm") == PurePosixPath("a/b.dcm")
    assert safe_relpath("sub dir/Ünïcødé ✓.nii.gz").parts == ("sub dir", "Ünïcødé ✓.nii.gz")
    assert safe_relpath("..hidden/...") == PurePosixPath("..hidden/...")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in entries.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def _tgz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unpack(tmp_path: Path, data: bytes, name: str) -> tuple[list, Path]:
    src = tmp_path / name
    src.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    return extract_archive(src, dest, name), dest


@pytest.mark.parametrize("pack,name", [(_zip, "a.zip"), (_tgz, "a.tar.gz")])
def test_extract_writes_files_with_digests(tmp_path: Path, pack, name: str) -> None:
    entries = {"top.txt": b"top", "d/e/deep.bin": bytes(range(256)) * 10}
    stored, dest = _unpack(tmp_path, pack(entries), name)
    assert {str(s.path): s.md5 for s in stored} == {
        k: hashlib.md5(v).hexdigest() for k, v in entries.items()
    }
    assert (dest / "d/e/deep.bin").read_bytes() == entries["d/e/deep.bin"]


@pytest.mark.parametrize(
    "member", ["../escape.txt", "/abs/path.txt", "ok/../../escape.txt", "a\\..\\b", "a//b"]
)
@pytest.mark.parametrize("pack,name", [(_zip, "a.zip"), (_tgz, "a.tgz")])
def test_extract_refuses_slip_before_writing(tmp_path: Path, pack, name: str, member: str) -> None:
    src = tmp_path / name
    src.write_bytes(pack({"first.txt": b"ok", member: b"evil"}))
    dest = tmp_path / "deep" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(ArchiveError):
        extract_archive(src, dest, name)
    assert list(dest.iterdir()) == []  # checked before anything was written
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["deep", "out", name])


def test_extract_refuses_zip_symlink(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        _unpack(tmp_path, buf.getvalue(), "a.zip")


def test_extract_refuses_tar_links(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        archive.addfile(info)
    with pytest.raises(ArchiveError, match="link"):
        _unpack(tmp_path, buf.getvalue(), "a.tar")


def test_extract_refuses_duplicates_and_file_folder_clash(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="both a file and a folder"):
        _unpack(tmp_path, _zip({"a": b"1", "a/b": b"2"}), "a.zip")


@pytest.mark.parametrize("data", [b"", b"not a zip at all", _zip({"x.txt": b"x" * 1000})[:-30]])
def test_extract_refuses_corrupt(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ArchiveError):
        _unpack(tmp_path, data, "a.zip")


def test_extract_refuses_bad_crc(tmp_path: Path) -> None:
    data = bytearray(_zip({"x.txt": b"hello world" * 100}))
    at = data.find(b"hello world")
    data[at] ^= 0xFF
    with pytest.raises(ArchiveError, match="corrupt"):
        _unpack(tmp_path, bytes(data), "a.zip")


def test_stream_zip_round_trips(tmp_path: Path) -> None:
    files = {"a.txt": b"alpha", "sub/b.bin": bytes(range(256)) * 5000}
    entries = []
    for name, data in files.items():
        path = tmp_path / name.replace("/", "_")
        path.write_bytes(data)
        entries.append((f"P/resources/R/files/{name}", path))
    chunks = list(stream_zip(entries))
    assert len(chunks) > 1  # produced progressively, not as one blob
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as archive:
        assert archive.testzip() is None
        assert {n: archive.read(n) for n in archive.namelist()} == {
            f"P/resources/R/files/{k}": v for k, v in files.items()
        }


def test_stage_stream_hashes_and_honours_length(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    body = b"0123456789" * 1000
    path, size, md5 = store.stage_stream(io.BytesIO(body + b"trailing"), limit=len(body))
    assert (path.read_bytes(), size, md5) == (body, len(body), hashlib.md5(body).hexdigest())
    with pytest.raises(OSError):
        store.stage_stream(io.BytesIO(b"short"), limit=10)
    assert list(store.staging.iterdir()) == [path]  # the short body left nothing behind


def _bomb(tmp_path: Path, data: bytes, name: str, limits: ExtractLimits) -> ArchiveTooLarge:
    tmp_path.mkdir(exist_ok=True)
    src = tmp_path / name
    src.write_bytes(data)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveTooLarge) as refused:
        extract_archive(src, dest, name, limits)
    assert not any(dest.iterdir())  # refused before a byte was written
    return refused.value


def test_deflate_bomb_is_refused_from_the_central_directory(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros.nii", b"\0" * 2**26)  # 64 MiB in ~64 KB
    assert len(buf.getvalue()) < 2**17
    refused = _bomb(tmp_path, buf.getvalue(), "a.zip", ExtractLimits(max_bytes=2**25))
    assert str(refused) == "archive expands to more than 33554432 bytes"


def test_tar_headers_promising_terabytes_are_refused_before_inflating(tmp_path: Path) -> None:
    refused = _bomb(tmp_path, declared_tgz(2**40), "a.tar.gz", ExtractLimits())
    assert str(refused) == "archive expands to more than 256.0 GiB"
    # Within the limit, the free disk decides.
    refused = _bomb(tmp_path / "b", declared_tgz(2**50), "b.tgz", ExtractLimits(max_bytes=2**62))
    assert "bytes are free on the server" in str(refused)


@pytest.mark.parametrize("pack,name", [(_zip, "a.zip"), (_tgz, "a.tar.gz")])
def test_too_many_members_are_refused(tmp_path: Path, pack, name: str) -> None:
    data = pack({f"f{n:03d}.txt": b"" for n in range(101)})
    refused = _bomb(tmp_path, data, name, ExtractLimits(max_members=100))
    assert str(refused) == "archive holds more than 100 files"


def test_a_zip_header_understating_its_member_writes_no_more_than_it_said(tmp_path: Path) -> None:
    """Python's zip reader stops at the declared size, where the checksum then fails: a lying
    header cannot smuggle bytes past the budget, which counts what is written as well."""
    data = bytearray(_zip({"x.bin": b"\x07" * 100_000}))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (100).to_bytes(4, "little")  # uncompressed size
    local = data.find(b"PK\x03\x04")
    data[local + 22 : local + 26] = (100).to_bytes(4, "little")
    src = tmp_path / "a.zip"
    src.write_bytes(bytes(data))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="corrupt"):
        extract_archive(src, dest, "a.zip", ExtractLimits(max_bytes=1000))
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 100
