"""A project's sessions as ``Session`` records, from a few bulk listings (the XNAT layer).

Requests grow with pages of rows, not with sessions:

- ``/data/experiments?project=P&xsiType=xnat:imageSessionData&columns=...`` naming scan columns
  (``xnat:imageScanData/type``): sessions joined with their scans, one row per scan;
- ``/data/experiments?project=P&xsiType=icr:roiCollectionData&columns=...``: ROI collections;
- ``/data/projects/P/experiments/ALL/{scans,assessors}/ALL/{resources,files}``: every scan's and
  assessor's resources (label, format, content) and files (path, size, digest), four calls.
  That form is ``xnat-ml serve``'s extension of XNAT's ``scans/ALL``; a server that refuses it
  (400/404) or answers it with nothing although the project has scans is asked per session
  instead (``/data/experiments/E/{scans,assessors}/ALL/{resources,files}``, WORKERS at a time).

Sessions shared into P from a project the user may not read are listed with ``accessible``
False (one more call, ``/data/projects``, only when such rows exist).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import unquote

from xnat.session import XNATSession

from xnat_ml.datasets.records import FileEntry, Resource, RoiCollection, Scan, Session
from xnat_ml.errors import XnatMlError
from xnat_ml.layout import ROI_COLLECTION_XSI
from xnat_ml.xnat.queries import list_rows
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import (
    assessor_uri,
    experiment_uri,
    project_uri,
    resource_uri,
    scan_uri,
    segment,
)

PAGE_ROWS = 5000
WORKERS = 8
SESSION_TYPE = "xnat:imageSessionData"
_SCAN = "xnat:imageScanData"
SESSION_COLUMNS = (
    "ID", "label", "project", "subject_ID", "subject_label",
    f"{_SCAN}/ID", f"{_SCAN}/type", f"{_SCAN}/series_description", f"{_SCAN}/series_class",
    f"{_SCAN}/UID",
)  # fmt: skip
ROI_COLUMNS = (
    "ID", "label", "project", "imageSession_ID", f"{ROI_COLLECTION_XSI}/collectionType",
    f"{ROI_COLLECTION_XSI}/name", f"{ROI_COLLECTION_XSI}/references/seriesUID",
)  # fmt: skip
# .../experiments/E/{scans|assessors}/X/resources/LABEL/files/PATH, as file rows give URIs
_FILE_URI = re.compile(
    r"/data/(?:archive/)?(?:projects/[^/]+/(?:subjects/[^/]+/)?)?experiments/([^/]+)/"
    r"(scans|assessors)/([^/]+)/resources/([^/]+)/files/(.+)"
)


@dataclass
class _Owner:
    """A scan or assessor being assembled: resources by label, files per resource."""

    fields: dict[str, str]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)


def list_sessions(session: XNATSession, project: str) -> list[Session]:
    """Every image session of ``project`` with its scans, ROI collections, resources and files."""
    rows = _paged(session, "/data/experiments", project=project, xsiType=SESSION_TYPE,
                  columns=",".join(SESSION_COLUMNS))  # fmt: skip
    rois = _paged(session, "/data/experiments", project=project, xsiType=ROI_COLLECTION_XSI,
                  columns=",".join(ROI_COLUMNS))  # fmt: skip
    owners: dict[tuple[str, str, str], _Owner] = {}
    sessions: dict[str, dict[str, str]] = {}
    members: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # session → owner keys
    for row in rows:
        row = _lower(row)
        sessions.setdefault(row["id"], row)
        scan_id = row.get(f"{_SCAN}/id".lower(), "")
        if scan_id:
            key = (row["id"], "scans", scan_id)
            owners[key] = _Owner(_scan_fields(row))
            members[row["id"]].append(key)
    for row in rois:
        row = _lower(row)
        parent = row.get("imagesession_id") or row.get("session_id", "")
        if parent in sessions:
            key = (parent, "assessors", row["id"])
            owners[key] = _Owner(row)
            members[parent].append(key)
    for kind in ("scans", "assessors"):
        expected = lambda kind=kind: any(key[1] == kind for key in owners)  # noqa: E731
        _attach_files(_listings(session, project, kind, lambda: list(sessions), expected), owners)
    unreadable = _unreadable_projects(session, project, sessions.values())
    return [
        _session(project, row, [owners[key] for key in members[sid]], unreadable)
        for sid, row in sessions.items()
    ]


def _paged(session: XNATSession, uri: str, **query: str) -> list[dict[str, Any]]:
    """All rows of a listing, fetched PAGE_ROWS at a time."""
    out: list[dict[str, Any]] = []
    while True:
        page = list_rows(session, uri, limit=str(PAGE_ROWS), offset=str(len(out)), **query)
        out.extend(page)
        if len(page) < PAGE_ROWS:
            return out


def _listings(
    session: XNATSession, project: str, kind: str,
    session_ids: Callable[[], list[str]], expected: Callable[[], bool],
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """(resource rows, file rows) of every ``kind`` (scans or assessors) of the project: two
    project-wide calls, or per session when the server does not take the project-wide form
    (refused, or empty although ``expected()`` says the project has such objects)."""
    wide = f"{project_uri(project)}/experiments/ALL/{kind}/ALL"
    try:
        rows = (list_rows(session, f"{wide}/resources"), list_rows(session, f"{wide}/files"))
    except XnatMlError as exc:
        if _status(exc) not in (400, 404):
            raise
    else:
        if rows[0] or not expected():
            return rows

    def one(session_id: str) -> tuple[list[dict], list[dict]]:
        owners_uri = f"{experiment_uri(session_id)}/{kind}/ALL"
        try:
            return (list_rows(session, f"{owners_uri}/resources"),
                    list_rows(session, f"{owners_uri}/files"))  # fmt: skip
        except XnatMlError as exc:
            if _status(exc) in (403, 404):  # nothing of that kind here, or a session not ours
                return [], []
            raise

    resources: list[dict] = []
    files: list[dict] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        for found, listed in pool.map(one, session_ids()):
            resources += found
            files += listed
    return resources, files


def _status(exc: XnatMlError) -> int | None:
    return getattr(exc.__cause__, "status_code", None)


def _attach_files(rows: tuple[list[dict], list[dict]], owners: dict) -> None:
    resources = {_lower(r).get("xnat_abstractresource_id", ""): _lower(r) for r in rows[0]}
    for (session_id, kind, owner_id, label, path), row in _file_rows(rows[1]):
        owner = owners.get((session_id, kind, owner_id))
        if owner is None:
            continue
        described = resources.get(str(row.get("cat_ID", "")), {})
        entry = owner.resources.setdefault(
            label, {"format": described.get("format", ""),
                    "content": described.get("content", ""), "files": []}
        )  # fmt: skip
        size = str(row.get("Size", ""))
        entry["files"].append(
            FileEntry(path, int(size) if size.isdigit() else None, row.get("digest") or None)
        )


def _file_rows(rows: list[dict]) -> Iterator[tuple[tuple[str, ...], dict]]:
    """(session id, scans|assessors, owner id, resource label, path) and the row, per file."""
    for row in rows:
        match = _FILE_URI.search(row.get("URI", ""))
        if match:
            yield tuple(unquote(g) for g in match.groups()), row


def file_catalogue(session: XNATSession, project: str) -> dict[str, tuple[int | None, str]]:
    """Archive URI (as ``FileRef.uri`` writes it) → (size, MD5) of every file of the
    project's scans and assessors: four listing calls (more on a server without the
    project-wide form)."""
    session_ids = cache(lambda: [row["ID"] for row in list_rows(
        session, "/data/experiments", project=project, columns="ID")])  # fmt: skip
    out: dict[str, tuple[int | None, str]] = {}
    for kind in ("scans", "assessors"):
        rows = _listings(session, project, kind, session_ids, lambda: bool(session_ids()))[1]
        for (session_id, _, owner_id, label, path), row in _file_rows(rows):
            parent = (scan_uri if kind == "scans" else assessor_uri)(session_id, owner_id)
            name = "/".join(segment(part) for part in path.split("/"))
            size = str(row.get("Size", ""))
            out[f"{resource_uri(parent, label)}/files/{name}"] = (
                int(size) if size.isdigit() else None, str(row.get("digest") or ""),
            )  # fmt: skip
    return out


def _unreadable_projects(
    session: XNATSession, project: str, rows: Any
) -> set[str]:
    others = {row.get("project", project) for row in rows} - {project, ""}
    if not others:
        return set()
    readable = {r.get("ID") for r in list_rows(session, "/data/projects", columns="ID")}
    return others - readable


def _session(
    project: str, row: dict[str, str], owners: list[_Owner], unreadable: set[str]
) -> Session:
    scans, rois = [], []
    for owner in owners:
        resources = tuple(
            Resource(label, r["format"], r["content"], tuple(r["files"]))
            for label, r in owner.resources.items()
        )
        f = owner.fields
        if "scan" in f:
            scans.append(Scan(f["scan"], f["type"], f["description"], f["class"], f["uid"],
                              resources))  # fmt: skip
        else:
            rois.append(RoiCollection(
                f["id"], f.get("label", ""), _field(f, "name"), _field(f, "collectiontype"),
                _field(f, "references/seriesuid"), resources,
            ))  # fmt: skip
    return Session(
        project=project,
        subject_id=row.get("subject_id", ""),
        subject_label=row.get("subject_label", ""),
        id=row["id"],
        label=row.get("label", ""),
        accessible=row.get("project", project) not in unreadable,
        scans=tuple(scans),
        roi_collections=tuple(rois),
    )


def _scan_fields(row: dict[str, str]) -> dict[str, str]:
    scan = f"{_SCAN}/".lower()
    return {
        "scan": row[f"{scan}id"],
        "type": row.get(f"{scan}type", ""),
        "description": row.get(f"{scan}series_description", ""),
        "class": row.get(f"{scan}series_class", ""),
        "uid": row.get(f"{scan}uid", ""),
    }


def _field(row: dict[str, str], name: str) -> str:
    """A column asked for by xpath: XNAT answers it under the xpath or the field's own name."""
    return row.get(f"{ROI_COLLECTION_XSI.lower()}/{name}") or row.get(name, "")


def _lower(row: dict[str, Any]) -> dict[str, str]:
    """Row keys lower-cased (XNAT echoes xpath columns in lower case), values as text."""
    return {str(k).lower(): "" if v is None else str(v) for k, v in row.items()}


def get_bytes(session: XNATSession, uri: str, what: str) -> bytes:
    """One small file's bytes (a label map, a stored JSON)."""
    with reported_as(what):
        return session.get(uri).content


def require_project(session: XNATSession, project: str) -> None:
    """A clear error when the project does not exist or the user may not read it."""
    try:
        list_rows(session, f"{project_uri(project)}/subjects", columns="ID", limit="1")
    except XnatMlError as exc:
        raise XnatMlError(f"project {project}: cannot be read ({_cause(exc)})") from None


def _cause(exc: XnatMlError) -> str:
    return str(exc).split(": ", 1)[-1]
