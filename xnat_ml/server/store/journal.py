"""The write protocol every file takes into (or out of) the archive, and start-up recovery.

A write stages its bytes under DATA/staging, fsyncs them, and commits its catalogue rows
together with one `file_journal` row per move (publish: staged file → archive path; discard:
archive path → gone) in a single SQLite transaction. Only then are the files renamed into
`archive/` (or the discarded ones removed), the folders fsync'd and the journal rows deleted.
So an overwrite keeps the old bytes until its commit, and a crash leaves one of two states:
not committed (staging holds leftovers, the archive is untouched) or committed (the journal
says what is still owed). `recover` settles both at start-up: it replays owed moves, empties
staging, and quarantines any archive file no catalogue row names, so that afterwards every file
on disk is catalogued and every catalogued file is whole.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

from flask import Flask
from sqlalchemy import delete, event, select
from sqlalchemy.orm import Session

from xnat_ml.atomic import fsync_path
from xnat_ml.server import faults
from xnat_ml.server.extension import Extension
from xnat_ml.server.store import trash
from xnat_ml.server.store.catalog import ResourceFile
from xnat_ml.server.store.db import session_factory
from xnat_ml.server.store.filestore import FileStore, UnsafePathError
from xnat_ml.server.store.models import Assessor, Experiment, JournalEntry, Resource, Subject

log = logging.getLogger(__name__)

# Objects whose folder is theirs alone (scan folders are named by client IDs and reused by
# design; the resource folders inside them never are).
_FOLDER_OWNERS = (Resource, Subject, Experiment, Assessor)

# Commit and move happen under this lock, so files land on disk in the order their catalogue
# commits did (two overwrites of one path end with the bytes the catalogue lists last).
_move_lock = threading.Lock()


class Publication:
    """The file moves of one write: `add` staged files, `discard` archive paths, then `commit`."""

    def __init__(self, store: FileStore, operation: str) -> None:
        self.store, self.operation = store, operation
        self.moves: list[tuple[Path, Path]] = []  # (staged file, archive path)
        self.discards: list[Path] = []

    def add(self, staged: Path, target: Path) -> None:
        if target.is_dir():
            raise UnsafePathError(f"file path {target.name!r}: a folder of that name exists")
        self.moves.append((staged, target))

    def discard(self, path: Path) -> None:
        """Remove this archive file or folder once the commit that drops it from the catalogue
        is durable (until then readers and a failed commit still have it)."""
        self.discards.append(path)

    def commit(self, db: Session) -> None:
        """Commit the session's catalogue changes with the journal, then do the moves."""
        faults.reached(self.operation, "staged")
        _flush_to_disk(self.store.staging, [staged for staged, _target in self.moves])
        made = self._make_folders()
        rel = self.store.relative
        rows = [JournalEntry(kind="publish", source=rel(s), target=rel(t)) for s, t in self.moves]
        rows += [JournalEntry(kind="discard", source=rel(p), target="") for p in self.discards]
        db.add_all(rows)
        with _move_lock:
            try:
                db.commit()
            except BaseException:
                db.rollback()
                for folder in made:
                    self.store.prune(folder, self.store.archive)
                raise
            faults.reached(self.operation, "committed")
            for n, (staged, target) in enumerate(self.moves):
                os.replace(staged, target)
                if n == 0:
                    faults.reached(self.operation, "publishing")
            for path in self.discards:
                self.store.remove(path)
        for folder in {target.parent for _staged, target in self.moves}:
            fsync_path(folder)
        faults.reached(self.operation, "published")
        _mark_done(db, [row.pk for row in rows])

    def _make_folders(self) -> list[Path]:
        """Create the target folders before the commit (a full disk fails here, not after)."""
        made = []
        for folder in sorted({target.parent for _staged, target in self.moves}):
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                made.append(folder)
        return made


def _flush_to_disk(staging: Path, files: list[Path]) -> None:
    """Make staged bytes durable before the commit that lists them: one syncfs(2) of the data
    file system where Linux has it (one journal flush, not one per file), else fsync each."""
    if len(files) > 1 and _syncfs is not None:
        fd = os.open(staging, os.O_RDONLY)
        try:
            if _syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    for path in files:
        fsync_path(path)


def _load_syncfs():
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


_syncfs = _load_syncfs()


def _mark_done(db: Session, pks: list[int]) -> None:
    """Drop finished journal rows; if that fails (a full disk) start-up will find them moot."""
    if not pks:
        return
    try:
        db.execute(delete(JournalEntry).where(JournalEntry.pk.in_(pks)))
        db.commit()
    except Exception as exc:  # the write itself is complete and durable
        db.rollback()
        log.warning("journal: %d finished entries left for start-up (%s)", len(pks), exc)


# ----------------------------------------------------------------------- folders of new objects


class ArchiveFiles(Extension[FileStore]):
    """The app's file store, made whole before anything reads it: `start` recovers (finishes or
    forgets the writes a crash interrupted), makes every session check that a new object's
    folder is not taken, and fills the disk reserve."""

    key = "xnat_ml.files"

    def start(self, app: Flask) -> FileStore:
        store = FileStore(app.config["DATA_DIR"], app.config["DISK_RESERVE_BYTES"])
        recover(app, store)
        note, claim = _claim_folders(store)
        sessions = session_factory(app)
        event.listen(sessions, "after_flush", note)  # new objects are pending here,
        event.listen(sessions, "after_flush_postexec", claim)  # their owners load here
        store.fill_reserve()
        return store


archive_files = ArchiveFiles()


def _claim_folders(store: FileStore):
    def note(session: Session, _context) -> None:
        session.info.setdefault("new_objects", []).extend(
            obj for obj in session.new if isinstance(obj, _FOLDER_OWNERS)
        )

    def claim(session: Session, _context) -> None:
        """A new resource or accession-ID object gets a fresh folder: anything already there
        (left by a crash before this protocol, or copied in by hand) is quarantined first."""
        for obj in session.info.pop("new_objects", []):
            folder = store.data_dir.joinpath(*obj.relative_dir.parts)  # loads the owner chain
            if folder.exists():
                moved = store.quarantine(folder)
                log.warning("new %s %s: its folder existed; quarantined as %s",
                            obj.kind, obj.relative_dir, store.relative(moved))

    return note, claim


# ----------------------------------------------------------------------------- start-up


def recover(app: Flask, store: FileStore) -> None:
    """Finish committed writes, forget uncommitted ones, quarantine what no catalogue names."""
    with session_factory(app)() as db:
        owed = list(db.scalars(select(JournalEntry).order_by(JournalEntry.pk)))
        for row in owed:
            _replay(store, row)
        db.execute(delete(JournalEntry))
        db.commit()
        if owed:
            log.warning("journal: finished %d file move(s) a crash had interrupted", len(owed))
        swept = store.sweep_staging()
        if swept:
            log.warning("journal: removed %d leftover(s) of interrupted writes from staging", swept)
        expected = _catalogued(db, store)
        trash.restore(store.data_dir, expected, store.quarantine)
        _reconcile(store, expected)
        db.rollback()


def _replay(store: FileStore, row: JournalEntry) -> None:
    source = store.data_dir / row.source
    if row.kind == "discard":
        store.remove(source)
    elif source.exists():  # publish; gone means it was renamed before the crash
        target = store.data_dir / row.target
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)


def _catalogued(db: Session, store: FileStore) -> dict[Path, int]:
    """Every file the catalogue names: its path on disk and its size."""
    folders = {r.pk: store.data_dir.joinpath(*r.relative_dir.parts)
               for r in db.scalars(select(Resource))}  # fmt: skip
    return {
        folders[pk].joinpath(path): size
        for pk, path, size in db.execute(
            select(ResourceFile.resource_pk, ResourceFile.path, ResourceFile.size)
        )
    }


def _reconcile(store: FileStore, expected: dict[Path, int]) -> None:
    """Quarantine archive files that no catalogue row names; report catalogued files missing."""
    orphans = 0
    for root, _dirs, files in os.walk(store.archive):
        for name in files:
            path = Path(root) / name
            if path not in expected:
                moved = store.quarantine(path)
                log.warning("archive file %s is in no catalogue; quarantined as %s",
                            store.relative(path), moved)
                orphans += 1
    for root, _dirs, _files in os.walk(store.archive, topdown=False):
        if Path(root) != store.archive:
            try:
                os.rmdir(root)  # only empty folders go: a stale empty folder claims nothing
            except OSError:
                pass
    missing = [p for p, size in expected.items() if not p.is_file() or p.stat().st_size != size]
    for path in missing:
        log.error("catalogued file %s is missing or has the wrong size", store.relative(path))
    if orphans or missing:
        log.warning("archive check: %d orphan(s) quarantined, %d catalogued file(s) missing",
                    orphans, len(missing))



