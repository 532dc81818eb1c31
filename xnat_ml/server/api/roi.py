"""ROI collections as the OHIF-XNAT viewer plugin stores them: `/xapi/roi/...`.

`PUT /xapi/roi/projects/{p}/sessions/{session}/collections/{label}?type=RTSTRUCT|SEG|AIM|MEAS|NIFTI`
with the file as the body creates an `icr:roiCollectionData` assessor of the session, with
`collectionType`, `name` and `references/seriesUID` read from the file, and a resource labelled
with the type holding the file. The file is validated before anything is created; an RTSTRUCT or
SEG must belong to the session as the XNAT roi plugin requires (its study, series and SOP
instances, else 422), so a collection accepted here is one a real XNAT accepts. A label taken on
another session is a 409; on this session, a 422 unless `overwrite=true`. The assessor, its
resource and its catalog row are committed together, then the file moves in (journal.py). The
answer is the assessor ID.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from flask import Blueprint, Response, request
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Conflict, NotFound, UnprocessableEntity

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
from xnat_ml.server.store.scan_instances import instance_uids, study_uid
from xnat_ml.server.store.uploads import staged_upload

bp = Blueprint("roi", __name__)

RESOURCE_FORMAT = {"RTSTRUCT": "DICOM", "SEG": "DICOM", "AIM": "XML", "MEAS": "JSON",
                   "NIFTI": "NIFTI"}
COLLECTION_RULE = "/xapi/roi/projects/<project>/sessions/<session>/collections/<label>"
DICOM_TYPES = ("RTSTRUCT", "SEG")  # whose references to the session's images are checked
SHOWN = 5  # missing dependencies named in a refusal


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
        if kind in DICOM_TYPES:
            _check_references(db, parent, label, content)
        stored = StoredFile(PurePosixPath(f"{label}{suffix}"), size, md5)
        assessor = _store(db, parent, label, kind, content, named, stored, overwrite)
    finally:
        store.discard(named)
    return Response(assessor.id, 200, mimetype="text/plain")


def _check_references(db: Session, parent: Experiment, label: str, content: RoiContent) -> None:
    """One study, the session's; every series a scan of the session (by UID) and every
    instance in those scans' DICOM: else 422 naming what is missing, as the roi plugin does."""
    where = f"ROI collection {label}"
    if len(content.study_uids) != 1:
        raise UnprocessableEntity(
            f"{where}: references {len(content.study_uids)} studies "
            f"({', '.join(content.study_uids) or 'none'}); expected one, session "
            f"{parent.label}'s.")  # fmt: skip
    if not content.series_uids:
        raise UnprocessableEntity(f"{where}: references no series.")
    scans = {scan.uid: scan for scan in parent.scans if scan.uid}
    referenced = [scans[uid] for uid in content.series_uids if uid in scans]
    session_study = str(parent.fields.get("UID") or "") or next(
        (uid for scan in referenced if (uid := study_uid(db, scan))), "")  # fmt: skip
    if content.study_uids[0] != session_study:
        raise UnprocessableEntity(
            f"{where}: references study {content.study_uids[0]}, not session {parent.label}'s "
            f"study {session_study or '(unknown)'}.")  # fmt: skip
    missing = [f"series {uid}" for uid in content.series_uids if uid not in scans]
    if not missing:
        held = set().union(*(instance_uids(db, scan) for scan in referenced))
        missing = [f"instance {uid}" for uid in content.instance_uids if uid not in held]
    if missing:
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise UnprocessableEntity(
            f"{where}: Missing dependencies: {', '.join(missing[:SHOWN])}{more} not in the "
            f"scans of session {parent.label}.")  # fmt: skip


def _store(db: Session, parent: Experiment, label: str, kind: str, content: RoiContent,
           named: Path, stored: StoredFile, overwrite: bool) -> Assessor:
    """Create (or with overwrite, replace) the assessor, its resource and file; one commit."""
    store = archive_files.get()
    reload(db, parent)
    assessor = db.scalar(select(Assessor).where(Assessor.project_pk == parent.project_pk,
                                                Assessor.label == label))
    publication = Publication(store, "roi")
    if assessor is not None:
        if assessor.xsi_type != ROI_COLLECTION_XSI or assessor.experiment_pk != parent.pk:
            raise Conflict(f"Label '{label}' is taken by {assessor.xsi_type} {assessor.id} "
                           f"of session {assessor.experiment.label}; pick another label.")
        if not overwrite:
            raise UnprocessableEntity(f"ROI collection '{label}' already exists on session "
                                      f"'{parent.label}'; add overwrite=true to replace it.")
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
