"""A real full disk for the tests: a small tmpfs (mounting needs root, which CI has; elsewhere
the test skips) and a file that takes the rest of its room."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(where: Path, size: str = "24m") -> Iterator[Path]:
    """``where`` (an empty folder) as a tmpfs of ``size`` while the block runs."""
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True)  # fmt: skip
    if done.returncode != 0:  # CI runs as root, where a skip would hide a broken set-up
        why = f"cannot mount a tmpfs here: {done.stderr.decode().strip()}"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(mount: Path, leave: int = 0) -> Path:
    """A file taking all free space of the mount but ``leave`` bytes (all of it when 0: the
    last blocks written one by one until ENOSPC)."""
    filler = mount / f"filler-{len(list(mount.glob('filler-*')))}"
    with open(filler, "wb", buffering=0) as out:
        want = free_bytes(mount) - leave
        if want > 0:
            os.posix_fallocate(out.fileno(), 0, want)
        if leave == 0:
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError:
                pass
    return filler


def free_bytes(mount: Path) -> int:
    stat = os.statvfs(mount)
    return stat.f_bavail * stat.f_frsize
