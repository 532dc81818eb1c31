"""What tests check after a crash or a refused write: disk and catalogue agree exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from xnat_ml.server.store.catalog import ResourceFile
from xnat_ml.server.store.db import make_engine
from xnat_ml.server.store.models import JournalEntry, Resource


def catalogued(data_dir: Path) -> dict[Path, tuple[int, str]]:
    """Every catalogued file's path on disk, with its catalogued size and md5."""
    engine = make_engine(data_dir)
    try:
        with Session(engine) as db:
            folders = {r.pk: data_dir.joinpath(*r.relative_dir.parts)
                       for r in db.scalars(select(Resource))}  # fmt: skip
            rows = db.scalars(select(ResourceFile))
            return {folders[r.resource_pk].joinpath(r.path): (r.size, r.md5) for r in rows}
    finally:
        engine.dispose()


def journal_rows(data_dir: Path) -> int:
    engine = make_engine(data_dir)
    try:
        with Session(engine) as db:
            return db.scalar(select(func.count()).select_from(JournalEntry))
    finally:
        engine.dispose()


def assert_consistent(data_dir: Path) -> None:
    """Every file under archive/ is catalogued, every catalogued file is there and whole,
    staging is empty and no journal entry is pending."""
    expected = catalogued(data_dir)
    on_disk = {p for p in (data_dir / "archive").rglob("*") if p.is_file()}
    assert sorted(on_disk - set(expected)) == [], "files on disk in no catalogue"
    assert sorted(set(expected) - on_disk) == [], "catalogued files missing"
    for path, (size, md5) in expected.items():
        data = path.read_bytes()
        assert (len(data), hashlib.md5(data).hexdigest()) == (size, md5), path
    assert list((data_dir / "staging").iterdir()) == []
    assert journal_rows(data_dir) == 0
