"""Temporary folders that a killed process does not leave behind for good.

``tempfile.TemporaryDirectory`` cleans up only when the process lives to leave the ``with``
block: a ``promote`` killed with SIGKILL kept its ``xnat-ml-*`` folder (a model's weights) in
/tmp for ever. Here every process that needs temporary folders gets one scratch folder,
``$TMPDIR/xnat-ml-scratch-<uid>/<random>/``, and holds an ``flock`` on a file in it for as long
as it lives; the kernel drops that lock when the process dies, however it dies. Whoever next
makes a scratch folder removes every folder whose lock is free. The root's own lock makes
"create and lock" and "sweep" exclusive, so a sweep never takes a folder whose owner has not
locked it yet.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from xnat_ml.errors import XnatMlError

OWNER_FILE = ".owner"  # locked by the folder's process while it lives
_ROOT_LOCK = ".lock"
_lock = threading.Lock()
_mine: dict[int, tuple[Path, IO[bytes]]] = {}  # pid -> its folder and locked owner file


def scratch_root() -> Path:
    """Where the scratch folders of this user live (one per live process)."""
    return Path(tempfile.gettempdir()) / f"xnat-ml-scratch-{os.getuid()}"


@contextmanager
def _root_locked(root: Path) -> Iterator[None]:
    root.mkdir(mode=0o700, exist_ok=True)
    if root.is_symlink() or root.stat().st_uid != os.getuid():
        raise XnatMlError(f"scratch folder {root}: not a folder of this user; set TMPDIR")
    with open(root / _ROOT_LOCK, "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def sweep(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` whose process is gone; the ones removed."""
    removed = []
    with _root_locked(root):
        for folder in root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir() or folder.is_symlink():
                continue
            try:
                with open(folder / OWNER_FILE, "ab") as owner:
                    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            except OSError:
                pass  # no owner file: the process died between creating and locking it
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def scratch_dir() -> Path:
    """This process's scratch folder, made (after a sweep of dead ones) on first use."""
    with _lock:
        pid = os.getpid()  # a forked child makes its own: the parent removes its own at exit
        if pid in _mine and _mine[pid][0].is_dir():
            return _mine[pid][0]
        root = scratch_root()
        sweep(root)
        with _root_locked(root):
            folder = Path(tempfile.mkdtemp(dir=root))
            owner = open(folder / OWNER_FILE, "ab")  # noqa: SIM115 - held for the process's life
            fcntl.flock(owner, fcntl.LOCK_EX)
        if not _mine:
            atexit.register(_remove_mine)
        _mine[pid] = (folder, owner)
        return folder


def _remove_mine() -> None:
    if mine := _mine.get(os.getpid()):
        shutil.rmtree(mine[0], ignore_errors=True)
        mine[1].close()


def temporary(prefix: str) -> tempfile.TemporaryDirectory:
    """A ``TemporaryDirectory`` inside this process's scratch folder: removed at the end of
    the ``with`` block as usual, and by the next xnat-ml process if this one is killed."""
    return tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_dir())
