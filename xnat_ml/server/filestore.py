"""Resource files on disk: where they live, which client paths are safe, and atomic writes.

Every resource owns one directory under `DATA/archive/`, named by ids (never by labels, see
models.Resource.relative_dir), so it never needs renaming or escaping. Bytes arrive in
`DATA/staging/` first and are renamed into place, so a reader never sees a half-written file;
which files a resource holds is decided by the catalog (catalog.py), committed after the rename.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from xnat_ml.server.names import unsafe_character

CHUNK = 1 << 20
MAX_SEGMENT_BYTES = 255
MAX_PATH_CHARS = 1024


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

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.staging = self.data_dir / "staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def resource_dir(self, relative_dir: PurePosixPath) -> Path:
        """The directory of a resource, from its data-dir-relative folder (models.Resource)."""
        if safe_relpath(str(relative_dir)) != relative_dir:
            raise UnsafePathError(f"resource folder {str(relative_dir)!r}: not a relative path")
        return self.data_dir.joinpath(*relative_dir.parts)

    def stage_stream(self, stream: BinaryIO, limit: int | None = None) -> tuple[Path, int, str]:
        """Copy a request body to a new staging file, hashing it on the way: (path, size, md5).

        `limit` (a Content-Length) stops the copy there, so a body is never read past its end.
        """
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
        except BaseException:
            os.unlink(name)
            raise
        if limit is not None and size < limit:
            os.unlink(name)
            raise OSError(f"request body ended after {size} of {limit} bytes")
        return Path(name), size, digest.hexdigest()

    def staging_dir(self) -> Path:
        """A fresh empty directory in staging, for unpacking an archive before anything moves in."""
        return Path(tempfile.mkdtemp(prefix="unpack-", dir=self.staging))

    def place(self, staged: Path, dest: Path) -> None:
        """Rename a staged file over its final path (atomic for readers of that path)."""
        if dest.is_dir():
            raise UnsafePathError(f"file path {dest.name!r}: a folder of that name exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, dest)

    def set_aside(self, path: Path) -> Path | None:
        """Move a file or folder out of sight into staging (None if absent).

        Done before the deleting transaction commits, so neither a reader nor a new object that
        reuses the id (and so the folder) can meet old bytes; `restore` undoes it on failure.
        """
        if not path.exists():
            return None
        aside = Path(tempfile.mkdtemp(prefix="delete-", dir=self.staging)) / "item"
        os.replace(path, aside)
        return aside

    @staticmethod
    def restore(aside: Path | None, origin: Path) -> None:
        if aside is not None:
            origin.parent.mkdir(parents=True, exist_ok=True)
            os.replace(aside, origin)

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
        """Throw away a staged or set-aside file or directory."""
        if path is None:
            return
        if path.parent.parent == self.staging and path.parent.name.startswith("delete-"):
            path = path.parent
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
