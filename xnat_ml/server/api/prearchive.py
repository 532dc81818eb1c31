"""The prearchive over REST, as xnatpy's `prearchive` and pyxnat's `manage.prearchive` call it.

`GET /data/prearchive/projects[/{p}[/{timestamp}/{folder}]]` lists uploads waiting (to the
project's Members and Owners, as XNAT shows the prearchive to those who may archive);
`POST /data/services/archive?src=...[&project=&subject=&session=&overwrite=]` imports one into
the archive and removes it from the prearchive in the same commit; `POST
/data/services/prearchive/delete?src=...` and `DELETE /data/prearchive/projects/{p}/{t}/{f}`
throw one away; deleting the project removes its uploads.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, NotFound

from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.session_import import OVERWRITE_MODES, Destination, import_file
from xnat_ml.server.store import signals
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.journal import Publication, archive_files
from xnat_ml.server.store.models import Project
from xnat_ml.server.store.objects import resolve_object
from xnat_ml.server.store.prearchive import PrearchiveSession

bp = Blueprint("prearchive", __name__)


@bp.record_once
def _on_register(state) -> None:
    signals.project_deleting.connect(_retire_project, sender=state.app, weak=False)


def _retire_project(app, project: Project, db, **_):
    """A deleted project's uploads go with it: rows in its commit, files after."""
    store = archive_files.get(app)
    entries = db.scalars(select(PrearchiveSession).where(
        PrearchiveSession.project_pk == project.pk)).all()  # fmt: skip
    files = [store.data_dir.joinpath(*entry.relative_file.parts) for entry in entries]
    for entry in entries:
        db.delete(entry)

    def remove_files() -> None:
        for path in files:
            store.remove(path)

    return remove_files


def _entries(*clauses) -> list[PrearchiveSession]:
    statement = select(PrearchiveSession).join(Project).where(*clauses)
    return list(get_db().scalars(statement.order_by(PrearchiveSession.pk)))


def _entry(project_id: str, timestamp: str, folder: str) -> PrearchiveSession:
    project = resolve_object(f"projects/{project_id}", "edit")
    found = _entries(PrearchiveSession.project_pk == project.pk,
                     PrearchiveSession.timestamp == timestamp,
                     PrearchiveSession.folder_name == folder)  # fmt: skip
    if not found:
        raise NotFound(f"Prearchive session {project_id}/{timestamp}/{folder} does not exist.")
    return found[0]


def _from_src() -> PrearchiveSession:
    """The entry `src` names: /data/prearchive/projects/P/TIMESTAMP/FOLDER (or without /data)."""
    src = request.values.get("src", "")
    parts = [p for p in src.split("/") if p]
    if parts[:1] == ["data"]:
        parts = parts[1:]
    if len(parts) != 5 or parts[:2] != ["prearchive", "projects"]:
        raise BadRequest(f"src {src[:200]!r} is not /data/prearchive/projects/P/TIMESTAMP/FOLDER.")
    return _entry(*parts[2:])


@bp.route("/data/prearchive/projects", methods=["GET"])
def list_all() -> Response:
    user = auth.require_login()
    rows = [e.row() for e in _entries() if auth.may(user, e.project, "edit")]
    return result_set(rows, request.args)


@bp.route("/data/prearchive/projects/<project_id>", methods=["GET"])
def list_project(project_id: str) -> Response:
    project = resolve_object(f"projects/{project_id}", "edit")
    rows = [e.row() for e in _entries(PrearchiveSession.project_pk == project.pk)]
    return result_set(rows, request.args)


@bp.route("/data/prearchive/projects/<project_id>/<timestamp>/<folder>", methods=["GET"])
def get_one(project_id: str, timestamp: str, folder: str) -> Response:
    return result_set([_entry(project_id, timestamp, folder).row()], request.args)


def _discard(entry: PrearchiveSession) -> Response:
    store = archive_files.get()
    db = get_db()
    publication = Publication(store, "prearchive")
    publication.discard(store.data_dir.joinpath(*entry.relative_file.parts))
    db.delete(entry)
    publication.commit(db)
    return Response("", 200)


@bp.route("/data/prearchive/projects/<project_id>/<timestamp>/<folder>", methods=["DELETE"])
def delete_one(project_id: str, timestamp: str, folder: str) -> Response:
    return _discard(_entry(project_id, timestamp, folder))


@bp.route("/data/services/prearchive/delete", methods=["POST"])
def delete_service() -> Response:
    return _discard(_from_src())


@bp.route("/data/services/archive", methods=["POST"])
def archive() -> Response:
    """Import a prearchive session into the archive (project, subject and session labels
    default to the entry's); the response is the new session's URI."""
    entry = _from_src()
    args = request.values
    overwrite = (args.get("overwrite") or "none").lower()
    if overwrite not in OVERWRITE_MODES:
        raise BadRequest(f"overwrite {overwrite!r} must be none, append or delete.")
    project = entry.project
    if args.get("project"):
        project = resolve_object(f"projects/{check_label('Project', args['project'])}", "edit")
    where = Destination(
        project=project.id,
        subject=check_label("Subject", args.get("subject") or entry.subject or entry.folder_name),
        session=check_label("Experiment", args.get("session") or entry.folder_name),
    )
    db = get_db()
    store = archive_files.get()
    upload = store.data_dir.joinpath(*entry.relative_file.parts)

    def leave_prearchive(publication: Publication) -> None:
        db.delete(entry)
        publication.discard(upload)

    uris, _skipped = import_file(db, store, project, where, overwrite, upload, leave_prearchive)
    return Response("\n".join(uris) + "\n", 200, mimetype="text/plain")
