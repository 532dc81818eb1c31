"""A resource's rows and files, as the blueprints that write or serve them share them: find one
by label or id, create one, re-read an object after a long upload, send a catalogued file."""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable
from pathlib import PurePosixPath

from flask import Response, send_file
from sqlalchemy import select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session
from werkzeug.exceptions import Conflict, NotFound

from xnat_ml.server.formats.validation import check_resource_label
from xnat_ml.server.store.journal import archive_files
from xnat_ml.server.store.models import ArchiveObject, Resource


def find_resource(db: Session, owner: ArchiveObject, label: str) -> Resource | None:
    """The owner's resource by label, or by its numeric id (xnat_abstractresource_id)."""
    return pick_resource(db.scalars(select(Resource).filter_by(**Resource.owner_key(owner))), label)


def pick_resource(resources: Iterable[Resource], label: str) -> Resource | None:
    """Of one owner's resources, the one with this label, else the one with this numeric id:
    how XNAT resolves a resource name in a URL."""
    resources = list(resources)
    found = next((r for r in resources if r.label == label), None)
    if found is None and label.isdigit():
        found = next((r for r in resources if r.pk == int(label)), None)
    return found


def create_resource(
    db: Session, owner: ArchiveObject, label: str, format: str = "", content: str = "",
    tags: str = "",
) -> Resource:
    """A new resource of owner (flushed, not committed); Conflict when the label is taken."""
    check_resource_label(label)
    if find_resource(db, owner, label) is not None:
        raise Conflict(f"Resource '{label}' already exists on {owner.uri}.")
    resource = Resource(label=label, format=format, content=content, tags=tags,
                        **Resource.owner_key(owner))
    db.add(resource)
    db.flush()
    db.refresh(resource)
    return resource


def reload(db: Session, obj: ArchiveObject) -> None:
    """Re-read an object after the body arrived; 404 if it was deleted in the meantime."""
    try:
        db.refresh(obj)
    except InvalidRequestError as exc:
        raise NotFound(f"{obj.kind.title()} {obj.uri} was deleted during the upload.") from exc


def send_catalogued(db: Session, resource: Resource, rel: PurePosixPath, md5: str) -> Response:
    """A catalogued file of the resource as the response (conditional on its md5 as ETag); ends
    the read transaction first, so the database is not held while the bytes go out."""
    path = archive_files.get().resource_dir(resource.relative_dir).joinpath(*rel.parts)
    db.rollback()
    if not path.is_file():
        raise NotFound(f"File '{rel}' is catalogued but missing from the archive folder.")
    mimetype = mimetypes.guess_type(rel.name)[0] or "application/octet-stream"
    return send_file(path, mimetype=mimetype, download_name=rel.name, etag=md5, conditional=True)
