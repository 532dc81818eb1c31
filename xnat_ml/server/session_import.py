"""DICOM uploads into the archive or the prearchive: the work behind `/data/services/import`
(api/dicom_import.py) and `/data/services/archive` (api/prearchive.py).

A zip (or tar) of DICOM becomes subject → session (xsi type by modality) → one scan per series,
each scan holding its instances in a `DICOM` resource. Nothing is half-imported: the upload is
unpacked and read in staging; the archive changes in one transaction, and the files move in only
after it commits (journal.py's write protocol). The prearchive keeps an upload whole until then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Conflict

from xnat_ml.layout import DICOM_RESOURCE
from xnat_ml.server.auth import require_login
from xnat_ml.server.formats import datatypes
from xnat_ml.server.formats.dicom_headers import (
    ImportContent,
    SeriesHeaders,
    StudyHeaders,
    label_from,
    read_folder,
)
from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.store import catalog
from xnat_ml.server.store.filestore import FileStore, StoredFile
from xnat_ml.server.store.journal import Publication
from xnat_ml.server.store.models import Experiment, Project, Scan, Subject
from xnat_ml.server.store.objects import new_accession
from xnat_ml.server.store.prearchive import PrearchiveSession
from xnat_ml.server.store.resource_files import create_resource, find_resource, reload
from xnat_ml.server.store.uploads import unpack_upload

log = logging.getLogger(__name__)

OVERWRITE_MODES = ("none", "append", "delete")


@dataclass
class Destination:
    project: str
    subject: str | None = None
    session: str | None = None
    prearchive: bool = False


def _read_upload(store: FileStore, upload: Path) -> tuple[Path, list, ImportContent]:
    """Unpack an upload into a fresh staging folder and read its DICOM headers; 400 if it holds
    none. The caller discards the folder (the first item)."""
    unpacked = store.staging_dir()
    try:
        stored = unpack_upload(upload, unpacked, "", "Import upload")
        content = read_folder(unpacked)
    except BaseException:
        store.discard(unpacked)
        raise
    if content.skipped:
        log.warning("import skipped %d file(s): %s", len(content.skipped),
                    "; ".join(f"{n} ({why})" for n, why in content.skipped.items()))
    if not content.studies:
        store.discard(unpacked)
        raise BadRequest(
            f"Import upload holds no DICOM ({len(content.skipped)} file(s) skipped, e.g. "
            f"{', '.join(list(content.skipped)[:3]) or 'none'})."
        )
    return unpacked, stored, content


def import_file(db: Session, store: FileStore, project: Project, where: Destination,
                overwrite: str, upload: Path,
                also: Callable[[Publication], None] | None = None) -> tuple[list[str], int]:
    """Import an upload (a zip or tar of DICOM) into the archive in one transaction: the
    session URIs and how many files were skipped. `also` adds its own changes (rows in `db`,
    files to discard) to the same commit."""
    unpacked, stored, content = _read_upload(store, upload)
    try:
        if where.session and len(content.studies) > 1:
            raise BadRequest(f"Import upload holds {len(content.studies)} studies; one session "
                             f"label ({where.session}) cannot name them all.")
        digests = {unpacked.joinpath(*f.path.parts): f.md5 for f in stored}
        job = _Import(db, store, project, where, overwrite, digests)
        if also is not None:
            also(job.publication)
        job.run(content)
    finally:
        store.discard(unpacked)
    return job.uris, len(content.skipped)


def to_prearchive(db: Session, store: FileStore, project: Project, where: Destination,
                   staged: Path) -> str:
    """Keep the upload in the prearchive (one study per upload); its /data/prearchive URI."""
    unpacked, _stored, content = _read_upload(store, staged)
    store.discard(unpacked)
    if len(content.studies) > 1:
        raise BadRequest(f"Import upload holds {len(content.studies)} studies; the prearchive "
                         "takes one study per upload.")
    study = next(iter(content.studies.values()))
    folder = where.session or label_from(study.patient_id) or label_from(study.patient_name)
    entry = PrearchiveSession(
        project_pk=project.pk, timestamp=datetime.now(UTC).strftime("%Y%m%d_%H%M%S%f"),
        folder_name=check_label("Experiment", folder or study.uid),
        subject=where.subject or label_from(study.patient_name) or label_from(study.patient_id),
        scan_date=study.date, scan_time=study.time, uploader=require_login().username,
    )  # fmt: skip
    db.add(entry)
    db.flush()
    publication = Publication(store, "prearchive")
    publication.add(staged, store.data_dir.joinpath(*entry.relative_file.parts))
    publication.commit(db)
    return f"/data{entry.url}"


def _series_order(series: SeriesHeaders) -> tuple:
    number = series.number
    return (0, int(number), series.uid) if number.isdigit() else (1, 0, series.uid)


def _scan_id(session: Experiment, series: SeriesHeaders) -> str:
    """SeriesNumber, made unique as XNAT does (`4-MR1`, `4-MR2`); the next free number if none."""
    taken = {scan.id for scan in session.scans}
    if series.number.isdigit():
        if series.number not in taken:
            return series.number
        k = 1
        while f"{series.number}-{series.modality or 'OT'}{k}" in taken:
            k += 1
        return f"{series.number}-{series.modality or 'OT'}{k}"
    n = 1
    while str(n) in taken:
        n += 1
    return str(n)


class _Import:
    """One import's archive changes: one transaction, then the files move in."""

    def __init__(self, db: Session, store: FileStore, project: Project, where: Destination,
                 overwrite: str, digests: dict[Path, str]) -> None:
        self.db, self.store, self.project = db, store, project
        self.where, self.overwrite, self.digests = where, overwrite, digests
        self.user = require_login().username
        self.uris: list[str] = []
        self.publication = Publication(store, "import")
        self.labels: set[str] = set()

    def run(self, content: ImportContent) -> None:
        try:
            reload(self.db, self.project)
            for study in content.studies.values():
                self._study(study)
        except BaseException:
            self.db.rollback()
            raise
        self.publication.commit(self.db)

    def _subject(self, study: StudyHeaders) -> Subject:
        label = self.where.subject or label_from(study.patient_name) or label_from(study.patient_id)
        if not label:
            raise BadRequest(f"Study {study.uid} has no PatientName/PatientID; pass subject=.")
        subject = self.db.scalar(
            select(Subject).where(Subject.project_pk == self.project.pk, Subject.label == label)
        )
        if subject is None:
            subject = Subject(id=new_accession("S"), project=self.project, label=label, fields={},
                              insert_user=self.user)
            self.db.add(subject)
        return subject

    def _session_label(self, study: StudyHeaders) -> str:
        """XNAT's default session label is the PatientID; further studies get _2, _3, ..."""
        base = self.where.session or label_from(study.patient_id) or label_from(study.patient_name)
        label, n = base, 1
        while label in self.labels:
            n += 1
            label = f"{base}_{n}"
        self.labels.add(label)
        return label

    def _study(self, study: StudyHeaders) -> None:
        subject = self._subject(study)
        label = self._session_label(study)
        session = self.db.scalar(
            select(Experiment).where(Experiment.project_pk == self.project.pk,
                                     Experiment.label == label)
        )
        if session is not None:
            if self.overwrite == "none":
                raise Conflict(f"Session '{label}' already exists in project '{self.project.id}'; "
                               "import with overwrite=append or overwrite=delete.")
            if session.subject_pk != subject.pk:
                raise Conflict(f"Session '{label}' belongs to subject '{session.subject.label}', "
                               f"not '{subject.label}'.")
            if self.overwrite == "delete":
                self._clear_scans(session)
        else:
            session = Experiment(
                id=new_accession("E"), project=self.project, subject=subject, label=label,
                xsi_type=datatypes.session_type_for(study.modality), date=study.date,
                time=study.time, modality=study.modality, fields=dict(study.fields),
                insert_user=self.user,
            )
            self.db.add(session)
        self.db.flush()
        for series in sorted(study.series.values(), key=_series_order):
            self._series(session, series)
        self.uris.append(
            f"/data/archive/projects/{self.project.id}/subjects/{subject.label}"
            f"/experiments/{label}"
        )

    def _clear_scans(self, session: Experiment) -> None:
        """overwrite=delete: the session's scans go, their files once that has committed (by
        resource folder: a new scan of the same ID reuses the scan folder, never a resource's)."""
        for scan in list(session.scans):
            for resource in scan.resources:
                self.publication.discard(self.store.resource_dir(resource.relative_dir))
            self.db.delete(scan)
        self.db.flush()
        self.db.expire(session, ["scans"])

    def _series(self, session: Experiment, series: SeriesHeaders) -> None:
        scan = next((s for s in session.scans if s.uid == series.uid), None)
        if scan is None:
            scan = Scan(
                experiment=session, id=_scan_id(session, series),
                xsi_type=datatypes.scan_type_for(series.modality), type=series.description,
                series_description=series.description, uid=series.uid,
                fields={**series.fields, "modality": series.modality},
            )
            self.db.add(scan)
            self.db.flush()
        resource = find_resource(self.db, scan, DICOM_RESOURCE)
        if resource is None:
            resource = create_resource(self.db, scan, DICOM_RESOURCE, format="DICOM",
                                       content="RAW")
        folder = self.store.resource_dir(resource.relative_dir)
        new_frames = 0
        for instance in series.instances:
            rel = PurePosixPath(f"{instance.sop_uid}.dcm")
            target = folder / rel.name
            if not target.exists():  # an instance sent again (append) replaces its file
                new_frames += instance.frames
            size = instance.path.stat().st_size
            self.publication.add(instance.path, target)
            catalog.record(self.db, resource, StoredFile(rel, size, self.digests[instance.path]),
                           "DICOM", "RAW", "")
        scan.fields["frames"] = str(int(scan.fields.get("frames") or 0) + new_frames)
