"""Resource files on disk: where they live, which client paths are safe, and atomic writes.

Every resource owns one directory under `DATA/archive/`, named by ids (never by labels, see
models.Resource.relative_dir), so it never needs renaming or escaping. Bytes arrive in
`DATA/staging/` first and are renamed into place once the catalog (catalog.py) lists them; the
order and crash recovery are journal.py's. What no catalog names goes to `DATA/quarantine/`.
A full disk is DiskFull (507), checked before writing where the size is known; a small
reserve file keeps room for the database, given up when a delete needs it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from xnat_ml.server.formats.names import unsafe_character

CHUNK = 1 << 20
MAX_SEGMENT_BYTES = 255
MAX_PATH_CHARS = 1024


RESERVE_NAME = "reserve.bin"


class DiskFull(Exception):
    """A write that does not fit on the server's disk (answered 507 Insufficient Storage)."""


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is the file system (ENOSPC, quota) or SQLite saying the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return "database or disk is full" in str(exc)


class UnsafePathError(ValueError):
    """A client-supplied file path that is empty, absolute, or would climb out of its resource."""


@dataclass(frozen=True)
class StoredFile:
    """What the catalog records for one file once its bytes are in place."""

    path: PurePosixPath
    size: int
    md5: str


def safe_relpath(raw: str) -> PurePosixPath:
    """The resource-relative path a client named, or UnsafePathError.

    Flask has already percent-decoded the URL once, so `%2e%2e` arrives here as `..`. `.` segments
    are dropped (tar members often start with `./`); `..`, empty segments (a leading `/`),
    backslashes, control and bidirectional-override characters (names.py) are refused rather
    than cleaned up: a client sending them is broken or hostile, and guessing what it meant is
    how traversal bugs start.
    """
    if not raw or len(raw) > MAX_PATH_CHARS:
        raise UnsafePathError(f"file path {raw[:80]!r}: empty or longer than {MAX_PATH_CHARS}")
    if "\\" in raw:
        raise UnsafePathError(f"file path {raw[:80]!r}: contains a backslash")
    if problem := unsafe_character(raw):
        raise UnsafePathError(f"file path {raw[:80]!r}: contains a {problem}")
    parts = [part for part in raw.split("/") if part != "."]
    for part in parts:
        if part in ("", ".."):
            raise UnsafePathError(f"file path {raw[:80]!r}: absolute, empty segment or '..'")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_SEGMENT_BYTES:
            raise UnsafePathError(f"file path {raw[:80]!r}: a name over {MAX_SEGMENT_BYTES} bytes")
    if not parts:
        raise UnsafePathError(f"file path {raw[:80]!r}: names no file")
    return PurePosixPath(*parts)


class FileStore:
    """The archive tree of one server's data dir, plus the staging area beside it."""

    def __init__(self, data_dir: Path, reserve_bytes: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.archive = self.data_dir / "archive"
        self.staging = self.data_dir / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)
        self.reserve = self.data_dir / RESERVE_NAME
        self.reserve_bytes = reserve_bytes

    def relative(self, path: Path) -> str:
        """A path inside the data dir, as the journal and the log name it."""
        return path.relative_to(self.data_dir).as_posix()

    # ------------------------------------------------------------------------- disk space

    def free(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    def check_room(self, needed: int, what: str) -> None:
        """DiskFull unless `needed` more bytes fit (the reserve is not counted as free)."""
        free = self.free()
        if needed > free:
            raise DiskFull(f"{what} needs {needed} bytes; {free} bytes are free on the server")

    def fill_reserve(self) -> None:
        """(Re)create the reserve file, if the disk has room; its space is kept for deletes."""
        have = self.reserve.stat().st_size if self.reserve.exists() else 0
        if have >= self.reserve_bytes or self.free() < 2 * (self.reserve_bytes - have):
            return
        try:
            with open(self.reserve, "ab") as out:
                os.posix_fallocate(out.fileno(), 0, self.reserve_bytes)
        except OSError:
            self.reserve.unlink(missing_ok=True)

    def release_reserve(self) -> None:
        """Give the reserve's space back when the disk is (nearly) full, so a delete can commit."""
        if self.reserve.exists() and self.free() < self.reserve_bytes:
            self.reserve.unlink()

    def resource_dir(self, relative_dir: PurePosixPath) -> Path:
        """The directory of a resource, from its data-dir-relative folder (models.Resource)."""
        if safe_relpath(str(relative_dir)) != relative_dir:
            raise UnsafePathError(f"resource folder {str(relative_dir)!r}: not a relative path")
        return self.data_dir.joinpath(*relative_dir.parts)

    def stage_stream(self, stream: BinaryIO, limit: int | None = None) -> tuple[Path, int, str]:
        """Copy a request body to a new staging file, hashing it on the way: (path, size, md5).

        `limit` (a Content-Length) stops the copy there, so a body is never read past its end.
        """
        if limit is not None:
            self.check_room(limit, "the upload")
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.staging)
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while limit is None or size < limit:
                    want = CHUNK if limit is None else min(CHUNK, limit - size)
                    block = stream.read(want)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    size += len(block)
        except BaseException as exc:
            os.unlink(name)
            if is_disk_full(exc):
                raise DiskFull(
                    f"the upload ran out of disk after {size} bytes; {self.free()} bytes are free"
                ) from exc
            raise
        if limit is not None and size < limit:
            os.unlink(name)
            raise OSError(f"request body ended after {size} of {limit} bytes")
        return Path(name), size, digest.hexdigest()

    def staging_dir(self) -> Path:
        """A fresh empty directory in staging, for unpacking an archive before anything moves in."""
        return Path(tempfile.mkdtemp(prefix="unpack-", dir=self.staging))

    def quarantine(self, path: Path) -> Path:
        """Move a file or folder to DATA/quarantine/<time>/<its data-dir path>, out of every
        listing and file route; kept for a person to look at, never deleted silently."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        dest = self.data_dir / "quarantine" / stamp / self.relative(path)
        n = 1
        while dest.exists():
            n += 1
            dest = self.data_dir / "quarantine" / f"{stamp}-{n}" / self.relative(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        return dest

    @staticmethod
    def remove(path: Path) -> None:
        """Delete a file or folder if present (a committed delete's bytes)."""
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def sweep_staging(self) -> int:
        """Empty staging (at start-up, when no write is in flight); how many entries went."""
        entries = list(self.staging.iterdir())
        for entry in entries:
            self.remove(entry)
        return len(entries)

    @staticmethod
    def prune(folder: Path, stop_at: Path) -> None:
        """Remove empty folders from folder upwards, up to (not including) stop_at."""
        while folder != stop_at and stop_at in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent

    def discard(self, path: Path | None) -> None:
        """Throw away a staged file or directory."""
        if path is not None:
            self.remove(path)
