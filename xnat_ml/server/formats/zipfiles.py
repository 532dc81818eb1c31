"""Archives in and out of the server: checked unpacking of uploads, streamed zips for downloads.

Clients upload zips (pyxnat, the DICOM import) and gzipped tars (xnatpy's `upload_dir`), and
XNAT extracts both. Every member name is checked before a single byte is written, so a hostile
archive (zip-slip `../`, absolute names, links, devices, control or bidirectional-override
characters in a name, a NUL included) is refused whole; a corrupt one fails while unpacking into
a staging directory that the caller throws away. So is a bomb: what the members say they expand
to is added up before writing (a zip's central directory, each tar header as it is read) and
checked against ExtractLimits and the free disk, and the bytes written are counted against the
same budget, in case a header lies.
Downloads are written as a zip on the fly, never assembled in memory or on disk.
"""

from __future__ import annotations

import hashlib
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from xnat_ml.server.formats.names import unsafe_character
from xnat_ml.server.store.filestore import CHUNK, StoredFile, UnsafePathError, safe_relpath

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class ArchiveError(ValueError):
    """An uploaded archive that is corrupt, unsupported, or holds unsafe members."""


class ArchiveTooLarge(ArchiveError):
    """An archive that would expand beyond ExtractLimits or the free disk (a zip bomb)."""


class ArchiveNoRoom(ArchiveTooLarge):
    """An archive whose content does not fit in the free disk."""


@dataclass(frozen=True)
class ExtractLimits:
    """What one uploaded archive may expand to. The defaults are far above a real upload (a
    large CT study is a few GB in a few thousand files) and far below what a bomb makes."""

    max_bytes: int = 256 * 2**30
    max_members: int = 1_000_000


class _Budget:
    """Bytes and members an extraction may still use; `take` refuses what goes beyond."""

    def __init__(self, limits: ExtractLimits, dest: Path) -> None:
        self.limits = limits
        self.free = shutil.disk_usage(dest).free
        self.declared = 0
        self.members = 0
        self.written = 0

    def declare(self, size: int) -> None:
        """One more member of `size` bytes, as its header says."""
        self.members += 1
        self.declared += max(size, 0)
        if self.members > self.limits.max_members:
            raise ArchiveTooLarge(f"archive holds more than {self.limits.max_members} files")
        self._check(self.declared, "expands to")

    def write(self, size: int) -> None:
        self.written += size
        self._check(self.written, "writes")

    def _check(self, total: int, verb: str) -> None:
        if total > self.limits.max_bytes:
            raise ArchiveTooLarge(f"archive {verb} more than {_size(self.limits.max_bytes)}")
        if total > self.free:
            raise ArchiveNoRoom(
                f"archive {verb} {total} bytes or more; {self.free} bytes are free on the server"
            )


def _size(count: int) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count} bytes"


def is_archive_name(name: str) -> bool:
    """Whether XNAT would unpack a file of this name when asked to extract."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def extract_archive(
    src: Path, dest: Path, name: str = "", limits: ExtractLimits = ExtractLimits()
) -> list[StoredFile]:
    """Unpack a zip or (gzipped) tar into the empty directory dest; the files written, hashed.

    The uploaded name picks the format when it has a known suffix (a tar may end with a zip
    member, which would fool sniffing); otherwise the content decides.
    Raises ArchiveError when the archive is unreadable or any member is unsafe, ArchiveTooLarge
    when it would expand beyond `limits` or the free disk; dest may then hold part of the
    content and must be discarded by the caller.
    """
    lowered = name.lower()
    as_zip = lowered.endswith(".zip") or (not is_archive_name(lowered) and zipfile.is_zipfile(src))
    budget = _Budget(limits, dest)
    try:
        if as_zip:
            return _extract_zip(src, dest, budget)
        if tarfile.is_tarfile(src):
            return _extract_tar(src, dest, budget)
    except ArchiveError:
        raise
    except UnsafePathError as exc:
        raise ArchiveError(f"archive member {exc}") from exc
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, RuntimeError) as exc:
        raise ArchiveError(f"archive is corrupt: {exc}") from exc
    raise ArchiveError("archive is neither a readable zip nor a tar file")


def _check_characters(name: str) -> None:
    """Refuse a member (folders too) whose name holds a control or bidirectional character."""
    if problem := unsafe_character(name):
        raise ArchiveError(f"archive member {name[:80]!r} contains a {problem}")


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


def _copy_member(stream: BinaryIO, dest: Path, rel: PurePosixPath, budget: _Budget) -> StoredFile:
    target = dest.joinpath(*rel.parts)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(target, "xb") as out:
        while block := stream.read(CHUNK):
            budget.write(len(block))
            out.write(block)
            digest.update(block)
            size += len(block)
    return StoredFile(rel, size, digest.hexdigest())


def _extract_zip(src: Path, dest: Path, budget: _Budget) -> list[StoredFile]:
    with zipfile.ZipFile(src) as archive:
        members = []
        for info in archive.infolist():
            # zipfile cuts `filename` at a NUL ('a\0b.txt' -> 'a'); the name as stored is kept
            # in orig_filename, and that is the one judged.
            _check_characters(info.orig_filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ArchiveError(f"archive member {info.filename!r} is a symbolic link")
            if not info.is_dir():
                budget.declare(info.file_size)
                members.append(info)
        paths = _check_names([info.orig_filename for info in members])
        stored = []
        for info, rel in zip(members, paths, strict=True):
            with archive.open(info) as stream:
                stored.append(_copy_member(stream, dest, rel, budget))
        return stored


def _extract_tar(src: Path, dest: Path, budget: _Budget) -> list[StoredFile]:
    with tarfile.open(src, "r:*") as archive:
        members = []
        # Checked header by header: reaching the next header of a compressed tar means
        # inflating the member before it, which a bomb makes endless.
        for member in archive:
            _check_characters(member.name)
            if member.isdir():
                continue
            if not member.isfile():
                raise ArchiveError(f"archive member {member.name!r} is a link or special file")
            budget.declare(member.size)
            members.append(member)
        paths = _check_names([member.name for member in members])
        stored = []
        for member, rel in zip(members, paths, strict=True):
            stream = archive.extractfile(member)
            if stream is None:  # only for non-regular members, refused above
                raise ArchiveError(f"archive member {member.name!r} has no content")
            with stream:
                stored.append(_copy_member(stream, dest, rel, budget))
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
