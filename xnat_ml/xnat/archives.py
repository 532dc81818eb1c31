"""Zip archives moved to and from XNAT: built from a directory, extracted without trusting names.

A downloaded zip comes from a server we do not control: an entry named `../x`, `/etc/x` or a
symbolic link must not write outside the destination (zip-slip). Every name is checked before
the first byte is written, and extraction goes to a temporary sibling that is renamed at the end.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from xnat_ml.errors import XnatMlError


def zip_directory(src_dir: Path, zip_path: Path, compress: bool = False) -> int:
    """Write every file under `src_dir` into `zip_path` (paths relative to it); the file count.

    Stored, not deflated, by default: deflate runs at tens of MB/s per core, slower than a
    LAN, and NIfTI (.nii.gz) and model weights barely shrink. `compress=True` suits slow links.
    """
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    count = 0
    with zipfile.ZipFile(zip_path, "w", method, compresslevel=1 if compress else None) as zf:
        for path in sorted(src_dir.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(src_dir).as_posix())
                count += 1
    return count


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    relative = PurePosixPath(name.replace("\\", "/"))
    if (
        not relative.parts
        or relative.is_absolute()
        or PureWindowsPath(name).anchor  # a drive (C:) or a network share
        or ".." in relative.parts
    ):
        raise XnatMlError(f"zip {archive.name}: entry {name!r} points outside the destination")
    return relative


def extract_zip(
    zip_path: Path,
    dest_dir: Path,
    rename: Callable[[str], str] = lambda name: name,
) -> list[Path]:
    """Extract `zip_path` into `dest_dir` (entry names mapped by `rename`); the files written.

    Refuses the whole archive if one entry would land outside `dest_dir`, is a link, or
    collides with another. Files of `dest_dir` that the archive does not hold are kept.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise XnatMlError(f"zip {zip_path.name}: not a readable zip archive ({exc})") from exc
    with zf:
        members: dict[PurePosixPath, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.is_dir():
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                raise XnatMlError(
                    f"zip {zip_path.name}: entry {info.filename!r} is a symbolic link"
                )
            relative = _safe_relative(rename(info.filename), zip_path)
            if relative in members:
                raise XnatMlError(f"zip {zip_path.name}: two entries would both write {relative}")
            members[relative] = info
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        needed = sum(info.file_size for info in members.values())
        if needed > shutil.disk_usage(dest_dir.parent).free:
            raise XnatMlError(f"zip {zip_path.name}: needs {needed} bytes, more than the free disk")
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.", dir=dest_dir.parent))
        try:
            for relative, info in members.items():
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
            _move_into(staging, dest_dir)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise XnatMlError(f"zip {zip_path.name}: corrupt archive ({exc})") from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return [dest_dir.joinpath(*relative.parts) for relative in members]


def _move_into(staging: Path, dest_dir: Path) -> None:
    """A new destination appears at once; into an existing one, each file is replaced at once."""
    if not dest_dir.exists():
        os.replace(staging, dest_dir)
        return
    for path in sorted(staging.rglob("*")):
        if path.is_file():
            target = dest_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
