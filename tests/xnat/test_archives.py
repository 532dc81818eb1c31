"""Zip handling on the client: hostile entry names are refused before anything is written."""

from __future__ import annotations

import stat
import zipfile
from pathlib import Path

import pytest

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.archives import extract_zip, zip_directory
from xnat_ml.xnat.uris import path_in_resource


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def test_round_trip_keeps_folders_and_bytes(tmp_path):
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "deeper" / "b.bin").write_bytes(bytes(range(256)) * 100)
    assert zip_directory(src, tmp_path / "x.zip") == 2
    written = extract_zip(tmp_path / "x.zip", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in written) == [
        "a.txt",
        "sub/deeper/b.bin",
    ]
    assert (tmp_path / "out" / "sub" / "deeper" / "b.bin").read_bytes() == bytes(range(256)) * 100


@pytest.mark.parametrize(
    "name",
    [
        "../evil.txt",
        "a/../../evil.txt",
        "/etc/evil.txt",
        "C:/evil.txt",
        "..\\evil.txt",
        "\\\\srv\\x",
    ],
)
def test_zip_slip_is_refused_and_nothing_written(tmp_path, name):
    archive = _zip(tmp_path / "bad.zip", {"good.txt": b"ok", name: b"evil"})
    (tmp_path / "out").mkdir()
    with pytest.raises(XnatMlError, match="outside the destination"):
        extract_zip(archive, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest").exists()
    assert not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []  # no staging folder left behind


def test_symbolic_link_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("link")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(XnatMlError, match="symbolic link"):
        extract_zip(tmp_path / "link.zip", tmp_path / "out")


def test_entries_colliding_after_renaming_are_refused(tmp_path):
    archive = _zip(
        tmp_path / "dup.zip",
        {"E1/resources/R/files/a.txt": b"1", "E2/resources/R/files/a.txt": b"2"},
    )
    with pytest.raises(XnatMlError, match="both write"):
        extract_zip(archive, tmp_path / "out", rename=path_in_resource)


def test_not_a_zip_and_truncated_zip(tmp_path):
    (tmp_path / "junk.zip").write_bytes(b"this is not a zip")
    with pytest.raises(XnatMlError, match="not a readable zip"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "out")
    whole = _zip(tmp_path / "whole.zip", {"a.bin": b"x" * 100_000})
    (tmp_path / "cut.zip").write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(XnatMlError):
        extract_zip(tmp_path / "cut.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_corrupt_member_leaves_destination_untouched(tmp_path):
    archive = _zip(tmp_path / "crc.zip", {"a.txt": b"A" * 1000, "b.txt": b"B" * 1000})
    data = bytearray(archive.read_bytes())
    offset = data.index(b"B" * 100)
    data[offset] = ord("C")  # stored entry: flips a byte, CRC no longer matches
    archive.write_bytes(bytes(data))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_bytes(b"old")
    with pytest.raises(XnatMlError, match="corrupt"):
        extract_zip(archive, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"old"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt"]


def test_extract_into_existing_folder_replaces_and_keeps_others(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_bytes(b"old")
    (tmp_path / "out" / "keep.txt").write_bytes(b"keep")
    extract_zip(_zip(tmp_path / "new.zip", {"a.txt": b"new"}), tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"new"
    assert (tmp_path / "out" / "keep.txt").read_bytes() == b"keep"


@pytest.mark.parametrize(
    ("entry", "inside"),
    [
        ("MR1/scans/2-T1w/resources/DICOM/files/001.dcm", "001.dcm"),
        ("P/resources/ML_MODELS/files/unet/model.pt", "unet/model.pt"),
        ("resources/NIFTI/files/image.nii.gz", "image.nii.gz"),
        ("plain/relative.txt", "plain/relative.txt"),
    ],
)
def test_path_in_resource_strips_xnat_zip_prefix(entry, inside):
    assert path_in_resource(entry) == inside
