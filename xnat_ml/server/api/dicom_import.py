"""XNAT's session import service for DICOM zips: `POST /data/services/import`.

A zip (or tar) of DICOM becomes subject → session (xsi type by modality) → one scan per series,
each scan holding its instances in a `DICOM` resource, in the archive; with
`dest=/prearchive[/projects/P]` the upload waits in the prearchive instead (store/prearchive.py;
api/prearchive.py archives it later). Files that are not DICOM are skipped: their count is in
the `X-Skipped-Files` response header and their names in the server log. The response body is
the session URI, one per line, as XNAT answers (xnatpy's `services.import_` turns it into a
session object, or a prearchive session). The work itself is session_import.py's.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import BadRequest

from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.session_import import (
    OVERWRITE_MODES,
    Destination,
    import_file,
    to_prearchive,
)
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.journal import archive_files
from xnat_ml.server.store.objects import resolve_object
from xnat_ml.server.store.uploads import staged_upload

bp = Blueprint("dicom_import", __name__)

HANDLERS = ("DICOM-zip", "dicom-zip", "SI", "")


def _destination() -> Destination:
    """Project/subject/session from `dest=/archive/projects/P/...`, overridden by named params."""
    args = request.args
    parts: dict[str, str] = {}
    prearchive = False
    if dest := args.get("dest"):
        segments = [s for s in dest.split("/") if s]
        prearchive = segments[:1] == ["prearchive"]
        pairs = dict(zip(segments[1::2], segments[2::2], strict=False))
        if (
            segments[:1] not in (["archive"], ["prearchive"])
            or len(segments) % 2 == 0
            or (not pairs and not prearchive)
            or list(pairs) != ["projects", "subjects", "experiments"][: len(pairs)]
            or (prearchive and len(pairs) > 1)
        ):
            raise BadRequest(f"dest {dest!r} is not /archive/projects/P[/subjects/S[/...]] "
                             "or /prearchive[/projects/P].")
        parts = {"project": pairs.get("projects", ""), "subject": pairs.get("subjects", ""),
                 "session": pairs.get("experiments", "")}
    for name in ("project", "subject", "session"):
        if args.get(name):
            parts[name] = args[name]
    if not parts.get("project"):
        raise BadRequest("Import needs a project: dest=/archive/projects/P or project=P.")
    return Destination(
        project=check_label("Project", parts["project"]),
        subject=check_label("Subject", parts["subject"]) if parts.get("subject") else None,
        session=check_label("Experiment", parts["session"]) if parts.get("session") else None,
        prearchive=prearchive,
    )


@bp.route("/data/services/import", methods=["POST", "PUT"])
def import_dicom() -> Response:
    handler = request.args.get("import-handler", "")
    if handler not in HANDLERS:
        raise BadRequest(f"import-handler {handler!r} is not supported; use DICOM-zip.")
    overwrite = request.args.get("overwrite", "none").lower()
    if overwrite not in OVERWRITE_MODES:
        raise BadRequest(f"overwrite {overwrite!r} must be none, append or delete.")
    where = _destination()
    db = get_db()
    project = resolve_object(f"projects/{where.project}", "edit")
    db.commit()  # no write lock while the upload streams in and headers are read

    store = archive_files.get()
    staged = staged_upload(store)[0]
    try:
        if where.prearchive:
            uris, skipped = [to_prearchive(db, store, project, where, staged)], 0
            staged = None  # moved into the prearchive
        else:
            uris, skipped = import_file(db, store, project, where, overwrite, staged)
    finally:
        store.discard(staged)
    response = Response("\n".join(uris) + "\n", 200, mimetype="text/plain")
    response.headers["X-Skipped-Files"] = str(skipped)
    return response
