"""The catalog: which files each resource holds, with size, md5 and XNAT's per-file attributes.

XNAT keeps a catalog per resource beside the files; here it is one SQLite table. A file exists for
clients once its row is committed; its bytes are renamed into place right after that commit
(journal.py), so an upload or an extracted archive appears all at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import PurePosixPath
from urllib.parse import quote

from sqlalchemy import ForeignKey, String, UniqueConstraint, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from xnat_ml.server.store.filestore import StoredFile
from xnat_ml.server.store.models import Base, Resource, utcnow


class ResourceFile(Base):
    __tablename__ = "resource_files"
    __table_args__ = (UniqueConstraint("resource_pk", "path"),)

    pk: Mapped[int] = mapped_column(primary_key=True)
    resource_pk: Mapped[int] = mapped_column(
        ForeignKey("resources.pk", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int]
    md5: Mapped[str] = mapped_column(String(32))
    format: Mapped[str] = mapped_column(default="")
    content: Mapped[str] = mapped_column(default="")
    tags: Mapped[str] = mapped_column(default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def name(self) -> str:
        return PurePosixPath(self.path).name


def files_of(db: Session, resources: Iterable[Resource]) -> list[ResourceFile]:
    """The catalogued files of the resources, by resource then path."""
    pks = [resource.pk for resource in resources]
    if not pks:
        return []
    query = select(ResourceFile).where(ResourceFile.resource_pk.in_(pks))
    return list(db.scalars(query.order_by(ResourceFile.resource_pk, ResourceFile.path)))


def find(db: Session, resource: Resource, path: PurePosixPath) -> ResourceFile | None:
    return db.scalar(
        select(ResourceFile).where(
            ResourceFile.resource_pk == resource.pk, ResourceFile.path == str(path)
        )
    )


def totals(db: Session, resources: Iterable[Resource]) -> dict[int, tuple[int, int]]:
    """file count and total bytes per resource pk (absent: empty)."""
    pks = [resource.pk for resource in resources]
    rows = db.execute(
        select(ResourceFile.resource_pk, func.count(), func.sum(ResourceFile.size))
        .where(ResourceFile.resource_pk.in_(pks))
        .group_by(ResourceFile.resource_pk)
    )
    return {pk: (count, size) for pk, count, size in rows}


def record(
    db: Session, resource: Resource, stored: StoredFile, format: str, content: str, tags: str
) -> ResourceFile:
    """Add or replace the catalog row of a file (its bytes are published after the commit)."""
    row = find(db, resource, stored.path)
    if row is None:
        row = ResourceFile(resource_pk=resource.pk, path=str(stored.path))
        db.add(row)
    row.size, row.md5 = stored.size, stored.md5
    row.format, row.content, row.tags = format, content, tags
    return row


def file_uri(resource: Resource, path: str) -> str:
    """The file's URI in the form XNAT lists it (resource label, then the path inside it)."""
    return f"{resource.owner.uri}/resources/{quote(resource.label, safe='')}/files/{quote(path)}"


def listing_row(resource: Resource, row: ResourceFile) -> dict[str, str]:
    """A row of `.../files?format=json`, all values strings as XNAT sends them."""
    return {
        "Name": row.name,
        "Size": str(row.size),
        "URI": file_uri(resource, row.path),
        "path": row.path,
        "collection": resource.label,
        "cat_ID": str(resource.pk),
        "digest": row.md5,
        "file_format": row.format,
        "file_content": row.content,
        "file_tags": row.tags,
    }
