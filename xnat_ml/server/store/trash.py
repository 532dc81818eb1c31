"""Deleting whole objects' folders so that a crash leaves the object with its files, or neither.

A delete moves the object's folders into ``trash/<id>/`` before the catalogue commit, so that a
failed commit can put them back untouched; it first writes, durably, where each folder came from
(``moves.json``). A crash before the commit leaves a catalogue that still names files in those
folders: ``restore`` (at start-up, before the archive check) puts them back. After the commit
the folders are only trash, and ``restore`` empties what a crash left there.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from xnat_ml.atomic import fsync_path, write_json_atomic

log = logging.getLogger(__name__)
MOVES = "moves.json"


class Hidden:
    """The folders of one delete, moved out of sight until the catalogue commit decides."""

    def __init__(self, data_dir: Path, folders: Iterable[PurePosixPath]) -> None:
        self.trash = data_dir / "trash" / uuid.uuid4().hex
        self.moved: list[tuple[Path, Path]] = []
        paths = (data_dir.joinpath(*folder.parts) for folder in folders)
        present = [path for path in paths if path.exists()]
        if not present:
            return
        self.trash.mkdir(parents=True)
        write_json_atomic(self.trash / MOVES, [
            {"from": folder.relative_to(data_dir).as_posix(), "to": str(n)}
            for n, folder in enumerate(present)
        ])  # fmt: skip
        for n, folder in enumerate(present):
            folder.rename(self.trash / str(n))
            self.moved.append((folder, self.trash / str(n)))
        fsync_path(self.trash)

    def put_back(self) -> None:
        """The commit failed: every folder returns where it was."""
        for folder, hidden in self.moved:
            hidden.rename(folder)
        shutil.rmtree(self.trash, ignore_errors=True)

    def discard(self) -> None:
        """The commit happened: the bytes go."""
        shutil.rmtree(self.trash, ignore_errors=True)


def restore(data_dir: Path, catalogued: Iterable[Path], quarantine) -> int:
    """Put back the folders of deletes that never committed (the catalogue still names files in
    them) and empty the rest of trash/; how many folders came back. A trash entry without its
    ``moves.json`` (older than this protocol) is handed to ``quarantine``, not deleted."""
    root = data_dir / "trash"
    entries = sorted(root.iterdir()) if root.is_dir() else []
    if not entries:
        return 0
    named = list(catalogued)
    restored = 0
    for entry in entries:
        try:
            moves = json.loads((entry / MOVES).read_text())
        except (OSError, ValueError):
            log.warning("trash entry %s has no readable %s; quarantined as %s", entry.name, MOVES,
                        quarantine(entry))  # fmt: skip
            continue
        for move in moves:
            origin, hidden = data_dir / move["from"], entry / move["to"]
            if (
                hidden.exists()
                and not origin.exists()
                and any(path.is_relative_to(origin) for path in named)
            ):
                origin.parent.mkdir(parents=True, exist_ok=True)
                hidden.rename(origin)
                restored += 1
                log.warning("delete of %s did not commit before a crash: folder put back",
                            move["from"])  # fmt: skip
        shutil.rmtree(entry, ignore_errors=True)
    return restored
