"""Archives in and out of the server: checked unpacking of uploads, streamed zips for downloads.

Clients upload zips (pyxnat, the DICOM import) and gzipped tars (xnatpy's `upload_dir`), and
XNAT extracts both. Every member name is checked before a single byte is written, so a hostile
archive (zip-slip `../`, absolute names, links, devices) is refused whole; a corrupt one fails
while unpacking into a staging directory that the caller throws away.
Downloads are written as a zip on the fly, never assembled in memory or on disk.
"""

from __future__ import annotations

import hashlib
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from xnat_ml.server.filestore import CHUNK, StoredFile, UnsafePathError, safe_relpath

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class ArchiveError(ValueError):
    """An uploaded archive that is corrupt, unsupported, or holds unsafe members."""


def is_archive_name(name: str) -> bool:
    """Whether XNAT would unpack a file of this name when asked to extract."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(src: Path, dest: Path, name: str = "") -> list[StoredFile]:
    """Unpack a zip or (gzipped) tar into the empty directory dest; the files written, hashed.

    The uploaded name picks the format when it has a known suffix (a tar may end with a zip
    member, which would fool sniffing); otherwise the content decides.
    Raises ArchiveError when the archive is unreadable or any member is unsafe; dest may then hold
    part of the content and must be discarded by the caller.
    """
    lowered = name.lower()
    as_zip = lowered.endswith(".zip") or (not is_archive_name(lowered) and zipfile.is_zipfile(src))
    try:
        if as_zip:
            return _extract_zip(src, dest)
        if tarfile.is_tarfile(src):
            return _extract_tar(src, dest)
    except ArchiveError:
        raise
    except UnsafePathError as exc:
        raise ArchiveError(f"archive member {exc}") from exc
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, RuntimeError) as exc:
        raise ArchiveError(f"archive is corrupt: {exc}") from exc
    raise ArchiveError("archive is neither a readable zip nor a tar file")


def _check_names(names: list[str]) -> list[PurePosixPath]:
    """Safe relative paths for all member names, refusing duplicates and file/folder clashes."""
    paths = [safe_relpath(name) for name in names]
    seen: set[PurePosixPath] = set()
    for path in paths:
        if path in seen:
            raise ArchiveError(f"archive member {str(path)!r} appears twice")
        seen.add(path)
    folders = {parent for path in paths for parent in path.parents}
    clash = seen & folders
    if clash:
        raise ArchiveError(f"archive member {str(min(clash))!r} is both a file and a folder")
    return paths


def _copy_member(stream: BinaryIO, dest: Path, rel: PurePosixPath) -> StoredFile:
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(target, "xb") as out:
        while block := stream.read(CHUNK):
            out.write(block)
            digest.update(block)
            size += len(block)
    return StoredFile(rel, size, digest.hexdigest())


def _extract_zip(src: Path, dest: Path) -> list[StoredFile]:
    with zipfile.ZipFile(src) as archive:
        members = []
        for info in archive.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"archive member {info.filename!r} is a symbolic link")
            if not info.is_dir():
                members.append(info)
        paths = _check_names([info.filename for info in members])
        stored = []
        for info, rel in zip(members, paths, strict=True):
            with archive.open(info) as stream:
                stored.append(_copy_member(stream, dest, rel))
        return stored


def _extract_tar(src: Path, dest: Path) -> list[StoredFile]:
    with tarfile.open(src, "r:*") as archive:
        members = []
        for member in archive:
            if member.isdir():
                continue
            if not member.isfile():
                raise ArchiveError(f"archive member {member.name!r} is a link or special file")
            members.append(member)
        paths = _check_names([member.name for member in members])
        stored = []
        for member, rel in zip(members, paths, strict=True):
            stream = archive.extractfile(member)
            if stream is None:  # only for non-regular members, refused above
                raise ArchiveError(f"archive member {member.name!r} has no content")
            with stream:
                stored.append(_copy_member(stream, dest, rel))
        return stored


class _Sink:
    """A write-only target for ZipFile that hands out what was written since the last drain."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        if self._parts:
            data = b"".join(self._parts)
            self._parts.clear()
            yield data


def stream_zip(entries: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """The bytes of a zip holding each (archive name, file) entry, produced as the files are read.

    Members are stored, not deflated: archive payloads (DICOM, NIfTI .gz, checkpoints) compress
    little, and storing keeps a download at disk speed. Zip64 is used where sizes need it.
    """
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo.from_file(path, name, strict_timestamps=False)
            with open(path, "rb") as src, archive.open(info, "w") as out:
                while block := src.read(CHUNK):
                    out.write(block)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()
