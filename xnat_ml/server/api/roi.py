"""ROI collections as the OHIF-XNAT viewer plugin stores them: `/xapi/roi/...`.

`PUT /xapi/roi/projects/{p}/sessions/{session}/collections/{label}?type=RTSTRUCT|SEG|AIM|MEAS|NIFTI`
with the file as the body creates an `icr:roiCollectionData` assessor of the session, with
`collectionType`, `name` and `references/seriesUID` read from the file, and a resource labelled
with the type holding the file. The file is validated before anything is created; the assessor,
its resource and its catalog row are committed together, then the file moves in (journal.py).
The answer is the assessor ID.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from xnat_ml.layout import ROI_COLLECTION_XSI
from xnat_ml.server.auth import require_login
from xnat_ml.server.formats.roi_content import (
    COLLECTION_TYPES,
    RoiContent,
    RoiFileError,
    file_suffix,
    read_collection,
)
from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.store import catalog
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.filestore import StoredFile
from xnat_ml.server.store.journal import Publication, archive_files
from xnat_ml.server.store.models import Assessor, Experiment
from xnat_ml.server.store.objects import new_accession, resolve_object
from xnat_ml.server.store.resource_files import (
    create_resource,
    find_resource,
    reload,
    send_catalogued,
)
from xnat_ml.server.store.uploads import staged_upload

bp = Blueprint("roi", __name__)

RESOURCE_FORMAT = {"RTSTRUCT": "DICOM", "SEG": "DICOM", "AIM": "XML", "MEAS": "JSON",
                   "NIFTI": "NIFTI"}
COLLECTION_RULE = "/xapi/roi/projects/<project>/sessions/<session>/collections/<label>"


def _collection_type() -> str:
    kind = (request.args.get("type") or "").upper()
    if kind not in COLLECTION_TYPES:
        raise BadRequest(f"ROI collection type {kind or '(none)'!r} must be one of "
                         f"{', '.join(COLLECTION_TYPES)}.")
    return kind


def _session(project: str, session: str, access: str) -> Experiment:
    found = resolve_object(f"projects/{project}/experiments/{session}", access)
    if not isinstance(found, Experiment):
        raise NotFound(f"No session '{session}' in project '{project}'.")
    return found


def _fields(kind: str, content: RoiContent, label: str, session: Experiment) -> dict[str, str]:
    series = content.series_uids or [request.args.get("seriesuid", "")]
    fields = {
        "collectionType": kind,
        "name": content.name or label,
        "subjectID": session.subject.id,
        "references/seriesUID": series[0],
        "uid": content.uid,
    }
    if len(series) > 1:
        fields["references/seriesUIDs"] = ",".join(series)
    if content.roi_names:
        fields["roiNames"] = ",".join(content.roi_names)
    return {k: v for k, v in fields.items() if v}


@bp.route(COLLECTION_RULE, methods=["PUT", "POST"])
def put_collection(project: str, session: str, label: str) -> Response:
    kind = _collection_type()
    check_label("ROI collection", label)
    overwrite = request.args.get("overwrite", "false").lower() == "true"
    db = get_db()
    parent = _session(project, session, "edit")
    db.commit()  # no write lock while the body streams in

    store = archive_files.get()
    staged, size, md5 = staged_upload(store)
    suffix = file_suffix(staged, kind)
    named = staged.with_name(staged.name + suffix)
    os.replace(staged, named)
    try:
        try:
            content = read_collection(named, kind)
        except RoiFileError as exc:
            raise BadRequest(f"ROI collection {label}: {exc}.") from exc
        stored = StoredFile(PurePosixPath(f"{label}{suffix}"), size, md5)
        assessor = _store(db, parent, label, kind, content, named, stored, overwrite)
    finally:
        store.discard(named)
    return Response(assessor.id, 200, mimetype="text/plain")


def _store(db: Session, parent: Experiment, label: str, kind: str, content: RoiContent,
           named: Path, stored: StoredFile, overwrite: bool) -> Assessor:
    """Create (or with overwrite, replace) the assessor, its resource and file; one commit."""
    store = archive_files.get()
    reload(db, parent)
    assessor = db.scalar(select(Assessor).where(Assessor.project_pk == parent.project_pk,
                                                Assessor.label == label))
    publication = Publication(store, "roi")
    if assessor is not None:
        if not overwrite:
            raise Conflict(f"ROI collection '{label}' already exists in project "
                           f"'{parent.project.id}'; add overwrite=true to replace it.")
        if assessor.xsi_type != ROI_COLLECTION_XSI or assessor.experiment_pk != parent.pk:
            raise Conflict(f"Label '{label}' is taken by {assessor.xsi_type} {assessor.id} "
                           "elsewhere; pick another label.")
        for old in list(assessor.resources):  # their files go once the replacement commits
            publication.discard(store.resource_dir(old.relative_dir))
            db.delete(old)
        db.flush()
        assessor.fields.clear()
    else:
        assessor = Assessor(
            id=new_accession("E"), experiment=parent, project_pk=parent.project_pk, label=label,
            xsi_type=ROI_COLLECTION_XSI, date=parent.date, fields={},
            insert_user=require_login().username,
        )
        db.add(assessor)
        db.flush()
    assessor.fields.update(_fields(kind, content, label, parent))
    resource = find_resource(db, assessor, kind) or create_resource(
        db, assessor, kind, format=RESOURCE_FORMAT[kind], content=kind
    )
    publication.add(named, store.resource_dir(resource.relative_dir) / stored.path.name)
    catalog.record(db, resource, stored, RESOURCE_FORMAT[kind], kind, "")
    publication.commit(db)
    return assessor


@bp.route(COLLECTION_RULE, methods=["GET"])
def get_collection(project: str, session: str, label: str) -> Response:
    """The collection's file (the plugin's viewer fetches it to draw the ROIs)."""
    parent = _session(project, session, "read")
    assessor = get_db().scalar(select(Assessor).where(Assessor.experiment_pk == parent.pk,
                                                      Assessor.label == label))
    if assessor is None or assessor.xsi_type != ROI_COLLECTION_XSI:
        raise NotFound(f"No ROI collection '{label}' on session '{session}'.")
    kind = assessor.fields.get("collectionType", "")
    resources = [r for r in assessor.resources if r.label == kind]
    rows = catalog.files_of(get_db(), resources)
    if not rows:
        raise NotFound(f"ROI collection '{label}' has no {kind} file.")
    return send_catalogued(get_db(), resources[0], PurePosixPath(rows[0].path), rows[0].md5)
