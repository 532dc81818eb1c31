"""Archive objects as XNAT shows them: listing rows (flat dicts) and single-object `items`.

Sessions are listed with one SQL query over experiments ⋈ subjects ⋈ projects, so a project of a
thousand sessions lists in milliseconds; the other kinds are small and listed from ORM objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from xnat_ml.server.formats.datatypes import subtypes
from xnat_ml.server.formats.xml_writer import Doc
from xnat_ml.server.store.models import (
    Assessor,
    Experiment,
    Project,
    Reconstruction,
    Resource,
    Scan,
    Subject,
)

# Columns a listing shows when the client names none (XNAT's defaults, trimmed). Like XNAT,
# project and subject rows carry no xsiType: pyxnat learns types from rows that have one.
DEFAULT_COLUMNS = {
    "project": ("ID", "secondary_ID", "name", "description", "pi_firstname", "pi_lastname", "URI"),
    "subject": ("ID", "project", "label", "insert_date", "insert_user", "URI"),
    "experiment": ("ID", "project", "date", "xsiType", "label", "insert_date", "URI"),
    "scan": (
        "xnat_imagescandata_id",
        "ID",
        "type",
        "series_description",
        "quality",
        "xsiType",
        "URI",
    ),
    "assessor": ("ID", "label", "xsiType", "project", "session_ID", "insert_date", "URI"),
    "reconstruction": ("xnat_reconstructedimagedata_id", "ID", "type", "baseScanType", "URI"),
}

# Other names clients use for the same columns (xpaths of the parent type, XNAT's lower-case ids).
ALIASES = {
    "project": {"xnat:projectdata/id": "ID"},
    "subject": {"xnat:subjectdata/id": "ID", "subject_label": "label", "subject_id": "ID"},
    "experiment": {
        "xnat:subjectdata/label": "subject_label",
        "xnat:subjectdata/id": "subject_ID",
        "xnat:subjectassessordata/id": "ID",
        "xnat:experimentdata/id": "ID",
        "subject_id": "subject_ID",
        "session_id": "ID",
        "xsi_type": "xsiType",
    },
    "scan": {"xnat:imagescandata/id": "ID", "uid": "UID", "xsi_type": "xsiType"},
    "reconstruction": {"xnat:reconstructedimagedata/id": "ID", "xsi_type": "xsiType"},
    "assessor": {
        "xnat:imageassessordata/id": "ID",
        "session_id": "session_ID",
        "imagesession_id": "session_ID",
        "xnat:imageassessordata/imagesession_id": "session_ID",
    },
}

# An experiment listing that names scan columns (`xnat:mrScanData/type`, any scan datatype)
# joins the scans: row keys `xnat:imagescandata/<field>`, one row per scan.
_SCAN_KEY = "xnat:imagescandata/"
_IN_CHUNK = 5000  # ids per IN (...) list, below SQLite's bound-variable limit
_SCAN_FIELDS = ("ID", "type", "series_description", "series_class", "UID", "quality", "xsiType")
SCAN_JOIN_ALIASES = {
    f"{scan_type.lower()}/{name.lower()}": f"{_SCAN_KEY}{name}"
    for scan_type in subtypes("xnat:imageScanData")
    for name in _SCAN_FIELDS
}


def asks_for_scans(columns: str) -> bool:
    return any(c.strip().lower() in SCAN_JOIN_ALIASES for c in columns.split(","))


def with_scan_rows(db: Session, rows: list[dict]) -> list[dict]:
    """Each session row repeated once per scan with the scan's fields (a session without
    scans keeps one row, its scan columns empty), in session then scan order."""
    ids = [row["ID"] for row in rows]
    by_session: dict[str, list[Scan]] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        statement = (
            select(Experiment.id, Scan)
            .join(Scan, Scan.experiment_pk == Experiment.pk)
            .where(Experiment.id.in_(ids[start : start + _IN_CHUNK]))
            .order_by(Scan.pk)
        )
        for session_id, scan in db.execute(statement):
            by_session.setdefault(session_id, []).append(scan)
    joined = []
    for row in rows:
        for scan in by_session.get(row["ID"], [None]):
            extra = {
                "ID": scan.id, "type": scan.type, "series_description": scan.series_description,
                "series_class": scan.fields.get("series_class", ""), "UID": scan.uid,
                "quality": scan.quality, "xsiType": scan.xsi_type,
            } if scan else {}  # fmt: skip
            joined.append({**row, **{f"{_SCAN_KEY}{k}": v for k, v in extra.items()}})
    return joined


def _stamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if value else ""


def _with_fields(row: dict, fields: dict | None) -> dict:
    for key, value in (fields or {}).items():
        row.setdefault(key, value)
    return row


def project_row(project: Project) -> dict:
    return {
        "ID": project.id,
        "secondary_ID": project.secondary_id,
        "name": project.name,
        "description": project.description,
        "keywords": project.keywords,
        "pi_firstname": project.pi_firstname,
        "pi_lastname": project.pi_lastname,
        "accessibility": project.accessibility,
        "insert_date": _stamp(project.created),
        "insert_user": project.insert_user,
        "last_modified": _stamp(project.last_modified or project.created),
        "URI": project.uri,
    }


def subject_row(subject: Subject) -> dict:
    return _with_fields(
        {
            "ID": subject.id,
            "project": subject.project.id,
            "label": subject.label,
            "insert_date": _stamp(subject.created),
            "insert_user": subject.insert_user,
            "last_modified": _stamp(subject.last_modified or subject.created),
            "URI": subject.uri,
        },
        subject.fields,
    )


def experiment_query() -> Select:
    """All session columns in one statement; callers add WHERE clauses."""
    return (
        select(
            Experiment.id,
            Experiment.label,
            Project.id.label("project"),
            Experiment.xsi_type,
            Experiment.date,
            Experiment.time,
            Experiment.modality,
            Subject.id.label("subject_ID"),
            Subject.label.label("subject_label"),
            Experiment.insert_user,
            Experiment.created,
            Experiment.last_modified,
            Experiment.fields,
        )
        .join(Project, Experiment.project_pk == Project.pk)
        .join(Subject, Experiment.subject_pk == Subject.pk)
        .order_by(Experiment.pk)
    )


def experiment_rows(db: Session, statement: Select) -> list[dict]:
    rows = []
    for r in db.execute(statement):
        row = {
            "ID": r.id,
            "label": r.label,
            "project": r.project,
            "xsiType": r.xsi_type,
            "date": r.date,
            "time": r.time,
            "modality": r.modality,
            "subject_ID": r.subject_ID,
            "subject_label": r.subject_label,
            "insert_date": _stamp(r.created),
            "insert_user": r.insert_user,
            "last_modified": _stamp(r.last_modified or r.created),
            "URI": f"/data/experiments/{r.id}",
        }
        rows.append(_with_fields(row, r.fields))
    return rows


def scan_row(scan: Scan) -> dict:
    return _with_fields(
        {
            "xnat_imagescandata_id": str(scan.pk),
            "ID": scan.id,
            "type": scan.type,
            "series_description": scan.series_description,
            "quality": scan.quality,
            "UID": scan.uid,
            "xsiType": scan.xsi_type,
            "image_session_ID": scan.experiment.id,
            "project": scan.experiment.project.id,
            "last_modified": _stamp(scan.last_modified or scan.created),
            "URI": scan.uri,
        },
        scan.fields,
    )


def assessor_row(assessor: Assessor) -> dict:
    return _with_fields(
        {
            "ID": assessor.id,
            "label": assessor.label,
            "xsiType": assessor.xsi_type,
            "project": assessor.experiment.project.id,
            "session_ID": assessor.experiment.id,
            "session_label": assessor.experiment.label,
            "date": assessor.date,
            "insert_date": _stamp(assessor.created),
            "insert_user": assessor.insert_user,
            "last_modified": _stamp(assessor.last_modified or assessor.created),
            "URI": assessor.uri,
        },
        assessor.fields,
    )


def reconstruction_row(reconstruction: Reconstruction) -> dict:
    return _with_fields(
        {
            "xnat_reconstructedimagedata_id": str(reconstruction.pk),
            "ID": reconstruction.id,
            "type": reconstruction.type,
            "baseScanType": reconstruction.base_scan_type,
            "xsiType": reconstruction.xsi_type,
            "image_session_ID": reconstruction.experiment.id,
            "project": reconstruction.experiment.project.id,
            "last_modified": _stamp(reconstruction.last_modified or reconstruction.created),
            "URI": reconstruction.uri,
        },
        reconstruction.fields,
    )


def rows_of(objects: Iterable) -> list[dict]:
    builders = {
        Project: project_row,
        Subject: subject_row,
        Scan: scan_row,
        Assessor: assessor_row,
        Reconstruction: reconstruction_row,
    }
    return [builders[type(obj)](obj) for obj in objects]


def data_fields(obj) -> dict:
    """The `data_fields` of a single-object GET (XNAT's field names for the datatype)."""
    if isinstance(obj, Project):
        row = project_row(obj)
        fields = {k: row[k] for k in ("ID", "secondary_ID", "name", "description", "keywords")}
        fields["PI/firstname"] = obj.pi_firstname
        fields["PI/lastname"] = obj.pi_lastname
        return fields
    if isinstance(obj, Subject):
        fields = {"ID": obj.id, "label": obj.label, "project": obj.project.id}
    elif isinstance(obj, Experiment):
        fields = {
            "ID": obj.id,
            "label": obj.label,
            "project": obj.project.id,
            "subject_ID": obj.subject.id,
            "date": obj.date,
            "time": obj.time,
            "modality": obj.modality,
        }
    elif isinstance(obj, Scan):
        fields = {
            "ID": obj.id,
            "type": obj.type,
            "series_description": obj.series_description,
            "UID": obj.uid,
            "quality": obj.quality,
            "image_session_ID": obj.experiment.id,
            "project": obj.experiment.project.id,
        }
    elif isinstance(obj, Reconstruction):
        fields = {
            "ID": obj.id,
            "type": obj.type,
            "baseScanType": obj.base_scan_type,
            "image_session_ID": obj.experiment.id,
        }
    else:
        fields = {
            "ID": obj.id,
            "label": obj.label,
            "project": obj.experiment.project.id,
            "imageSession_ID": obj.experiment.id,
            "date": obj.date,
        }
    fields = {k: v for k, v in fields.items() if v not in ("", None)}
    return _with_fields(fields, getattr(obj, "fields", None))


def item(obj) -> dict:
    """The single-object GET body: {"items": [{"data_fields", "meta", "children"}]}."""
    return {
        "items": [
            {
                "data_fields": data_fields(obj),
                "meta": {
                    "isHistory": False,
                    "xsi:type": obj.xsi_type,
                    "start_date": obj.created.strftime("%a %b %d %H:%M:%S UTC %Y"),
                },
                "children": [],
            }
        ]
    }


def _resource_doc(resource: Resource) -> Doc:
    values = {"label": resource.label, "format": resource.format, "content": resource.content,
              "tags": resource.tags, "description": resource.description, "URI": resource.uri}
    return Doc(resource.xsi_type, values)  # fmt: skip


def xml_doc(obj) -> Doc:
    """The object as XNAT's XML document holds it: its fields, its resources and (as XNAT
    nests them) a subject's experiments and a session's scans and assessors."""
    values = {key.replace("/", "_"): value for key, value in data_fields(obj).items()}
    resources = [_resource_doc(r) for r in sorted(obj.resources, key=lambda r: r.pk)]
    holder = {Scan: "file", Reconstruction: "out"}.get(type(obj), "resources")
    children = {holder: resources}
    if isinstance(obj, Subject):
        children["experiments"] = [xml_doc(e) for e in sorted(obj.experiments, key=_pk)]
    if isinstance(obj, Experiment):
        children["scans"] = [xml_doc(scan) for scan in sorted(obj.scans, key=_pk)]
        children["reconstructions"] = [xml_doc(r) for r in sorted(obj.reconstructions, key=_pk)]
        children["assessors"] = [xml_doc(a) for a in sorted(obj.assessors, key=_pk)]
    return Doc(obj.xsi_type, values, children)


def _pk(obj) -> int:
    return obj.pk
