"""Resources and their files at every archive level, in XNAT's URL forms and JSON shapes.

`{object}/resources[/{label}[/files[/{path}]]]` where {object} is any project, subject, session,
scan or assessor path that store/objects.py's resolve_object understands (`/data/projects/...`,
`/data/archive/...`, `/data/experiments/{id}/...`); `{object}/files` lists or zips all resources
of an object, and `scans/ALL` or `scans/1,2` (likewise `assessors/ALL`, `assessors/A1,A2`,
`resources/A,B` and, as XNAT, `experiments/E1,E2/...`) select several at once;
`projects/P/experiments/ALL/{scans,assessors}/ALL` (our extension) selects all of a project's.

Uploads never hold the database lock while bytes arrive: the request's first transaction only
resolves and authorises, the body is streamed to staging, and a second short transaction checks
for conflicts and commits the catalog rows, after which the files are renamed into place
(journal.py: the one write protocol, shared with the DICOM import and ROI collections).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    NotFound,
)

from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.validation import check_resource_label
from xnat_ml.server.formats.zipfiles import (
    is_archive_name,
    stream_zip,
)
from xnat_ml.server.routing import archive_route, frees_disk_space
from xnat_ml.server.store import catalog, ml_assets
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.filestore import (
    StoredFile,
    UnsafePathError,
    safe_relpath,
)
from xnat_ml.server.store.journal import Publication, archive_files
from xnat_ml.server.store.models import (
    ArchiveObject,
    Assessor,
    Experiment,
    Project,
    Resource,
    Scan,
    Subject,
)
from xnat_ml.server.store.objects import resolve_object, split_path, walk
from xnat_ml.server.store.resource_files import (
    create_resource,
    find_resource,
    pick_resource,
    reload,
    send_catalogued,
)
from xnat_ml.server.store.uploads import staged_upload, unpack_upload

bp = Blueprint("resources", __name__)

RESOURCE_COLUMNS = (
    "xnat_abstractresource_id", "label", "element_name", "category", "cat_id", "cat_desc",
    "format", "content", "tags", "file_count", "file_size",
)
# A file path is taken as sent (even `//etc/x`, with merge_slashes=False) so that safe_relpath
# refuses it with a 400, rather than the router redirecting or answering 405.
FILE_RULE = "/<xnat:owner>/resources/<label>/files/<rawpath:fpath>"
_PROJECT_WIDE = re.compile(r"(.+)/experiments/ALL/(scans|assessors)/ALL")
# experiments/E1,E2/scans/ALL, experiments/E1/assessors/A1,A2, ...: XNAT splits both at commas
_SEVERAL = re.compile(
    r"(?P<base>(?:.+/)?experiments)/(?P<sessions>[^/]+)/(?P<kind>scans|assessors)/(?P<which>[^/]+)"
)
_IN_CHUNK = 5000  # ids per IN (...) list, below SQLite's bound-variable limit


_TRUE = ("true", "1", "yes")


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in _TRUE


# ----------------------------------------------------------------------------- lookups


def owners(path: str, access: str) -> list[ArchiveObject]:
    """The archive objects a path names, after checking the caller's access to their project.

    `.../scans/ALL` and `.../scans/1,2` name several scans of one session;
    `projects/P/experiments/ALL/scans/ALL` (or `.../assessors/ALL`) every scan (assessor) of
    the project, so one request lists a whole project's resources or files.
    """
    wide = _PROJECT_WIDE.fullmatch(path)
    if wide:
        project = resolve_object(wide.group(1), access)
        if not isinstance(project, Project):
            raise NotFound(f"No project at {wide.group(1)}.")
        model = Scan if wide.group(2) == "scans" else Assessor
        statement = (
            select(model)
            .join(Experiment, model.experiment_pk == Experiment.pk)
            .where(Experiment.project_pk == project.pk)
            .options(selectinload(model.experiment))
            .order_by(model.pk)
        )
        return list(get_db().scalars(statement))
    match = _SEVERAL.fullmatch(path)
    if match and ("," in match["sessions"] or "," in match["which"] or match["which"] == "ALL"):
        found: list[ArchiveObject] = []
        for session in _sessions(match["base"], match["sessions"], access, match["kind"]):
            if match["kind"] == "scans":
                children = sorted(session.scans, key=_scan_order)
            else:
                children = sorted(session.assessors, key=lambda a: a.pk)
            wanted = match["which"].split(",")
            for child in children:
                if match["which"] == "ALL" or child.id in wanted or child.label in wanted:
                    set_committed_value(child, "experiment", session)  # not loaded again
                    found.append(child)
        return found
    return [resolve_object(path, access)]


def _sessions(base: str, ids: str, access: str, kind: str) -> list[Experiment]:
    """The sessions of `experiments/E1,E2`, their scans or assessors (`kind`) loaded with them;
    with several, as XNAT does for a GET, those the caller may not read or that do not exist
    are left out rather than failing the request. Several are found together (one query per
    2,500 names, where resolving each would cost a zip of 100 sessions hundreds of queries),
    the project role checked once per project."""
    names = list(dict.fromkeys(filter(None, ids.split(","))))
    if "," not in ids:
        session = resolve_object(f"{base}/{ids}", access)
        if not isinstance(session, Experiment):
            raise NotFound(f"No session at {base}/{ids}.")
        return [session]
    auth.require_login()
    try:  # the object above the sessions (none for /data/experiments), its role checked
        above = split_path(f"{base}/ALL")[:-1]
        parent = walk(above, access) if above else None
    except HTTPException:
        return []
    if parent is not None and not isinstance(parent, Project | Subject):
        return []
    children = Experiment.scans if kind == "scans" else Experiment.assessors
    by_name: dict[str, Experiment] = {}
    for start in range(0, len(names), _IN_CHUNK // 2):
        chunk = names[start : start + _IN_CHUNK // 2]
        if parent is None:  # top level: accession IDs only
            where = Experiment.id.in_(chunk)
        else:  # below a project or subject: label or accession ID
            column = Experiment.project_pk if isinstance(parent, Project) else Experiment.subject_pk
            where = (column == parent.pk) & (Experiment.label.in_(chunk) | Experiment.id.in_(chunk))
        statement = select(Experiment).where(where).options(selectinload(children))
        for session in get_db().scalars(statement.order_by(Experiment.pk)):
            for name in (session.id,) if parent is None else (session.id, session.label):
                by_name.setdefault(name, session)
    allowed: dict[int, bool] = {}
    found = []
    for name in names:
        session = by_name.get(name)
        if session is None or (parent is None and not _may(session, access, allowed)):
            continue
        found.append(session)
    return found


def _may(session: Experiment, access: str, allowed: dict[int, bool]) -> bool:
    """Whether the caller has `access` to the session's project (remembered per project)."""
    if session.project_pk not in allowed:
        try:
            auth.require_project_role(session.project_obj, access)
            allowed[session.project_pk] = True
        except HTTPException:
            allowed[session.project_pk] = False
    return allowed[session.project_pk]


def _scan_order(scan: Scan) -> tuple:
    return (0, int(scan.id), "") if scan.id.isdigit() else (1, 0, scan.id)


def resources_of(db: Session, owner_list: list[ArchiveObject], labels: str | None = None):
    """All resources of the owners, or those named by a comma-separated label/id list (per
    owner and name: the resource of that label, else the one of that id), in owner order."""
    by_owner = _resources_by_owner(db, owner_list)
    found: list[Resource] = []
    for owner in owner_list:
        mine = by_owner.get((owner.kind, owner.pk), [])
        if labels is None:
            found += mine
            continue
        for label in labels.split(","):
            resource = pick_resource(mine, label)
            if resource is not None:
                found.append(resource)
    return found


def _resources_by_owner(
    db: Session, owner_list: list[ArchiveObject]
) -> dict[tuple[str, int], list[Resource]]:
    """Every resource of the owners by (kind, pk), oldest first: one query per kind of owner.
    Each resource gets its owner attached, so that listing a project's thousands of files does
    not load every owner again, one query each (`Resource.owner`)."""
    by_owner: dict[tuple[str, int], list[Resource]] = {}
    owner_of = {(owner.kind, owner.pk): owner for owner in owner_list}
    for kind in {owner.kind for owner in owner_list}:
        column = getattr(Resource, f"{kind}_pk")
        pks = [owner.pk for owner in owner_list if owner.kind == kind]
        for start in range(0, len(pks), _IN_CHUNK):
            query = select(Resource).where(column.in_(pks[start : start + _IN_CHUNK]))
            for resource in db.scalars(query.order_by(Resource.pk)):
                key = (kind, getattr(resource, f"{kind}_pk"))
                set_committed_value(resource, kind, owner_of[key])
                by_owner.setdefault(key, []).append(resource)
    return by_owner


def _one_owner(path: str, access: str) -> ArchiveObject:
    found = owners(path, access)
    if len(found) != 1:
        raise NotFound(f"No single object at {path}.")
    return found[0]


def _resource_or_404(db: Session, owner: ArchiveObject, label: str) -> Resource:
    resource = find_resource(db, owner, label)
    if resource is None:
        raise NotFound(f"Resource '{label}' does not exist on {owner.uri}.")
    return resource


def resource_row(resource: Resource, totals: dict[int, tuple[int, int]]) -> dict[str, str]:
    """A row of `.../resources?format=json` (strings, as XNAT sends them; no URI, as XNAT)."""
    count, size = totals.get(resource.pk, (0, 0))
    return {
        "xnat_abstractresource_id": str(resource.pk),
        "label": resource.label,
        "element_name": resource.xsi_type,
        "category": resource.owner.kind,
        "cat_id": str(resource.pk),
        "cat_desc": resource.description,
        "format": resource.format,
        "content": resource.content,
        "tags": resource.tags,
        "file_count": str(count),
        "file_size": str(size),
    }


# ----------------------------------------------------------------------------- resources


@archive_route(bp, "/<xnat:owner>/resources", methods=["GET"])
def list_resources(owner: str) -> Response:
    db = get_db()
    found = resources_of(db, owners(owner, "read"))
    totals = catalog.totals(db, found)
    rows = [resource_row(r, totals) for r in found]
    # XNAT ignores columns= here, and xnatpy relies on that (it asks for ID,URI which rows lack).
    args = {k: v for k, v in request.args.items() if k.lower() != "columns"}
    return result_set(rows, args, RESOURCE_COLUMNS)


@archive_route(bp, "/<xnat:owner>/resources/<label>", methods=["GET"])
def get_resource(owner: str, label: str) -> Response:
    db = get_db()
    resource = _resource_or_404(db, _one_owner(owner, "read"), label)
    row = resource_row(resource, catalog.totals(db, [resource]))
    return jsonify(
        {
            "items": [
                {
                    "meta": {"xsi:type": resource.xsi_type, "isHistory": False},
                    "data_fields": {**row, "ID": row["xnat_abstractresource_id"]},
                    "children": [],
                }
            ]
        }
    )


@archive_route(bp, "/<xnat:owner>/resources/<label>", methods=["PUT", "POST"])
def put_resource(owner: str, label: str) -> Response:
    db = get_db()
    parent = _one_owner(owner, "edit")
    args = request.args
    resource = create_resource(
        db, parent, label, args.get("format", ""), args.get("content", ""), args.get("tags", "")
    )
    resource.description = args.get("description", "")
    db.commit()
    return Response(resource.uri, 200, mimetype="text/plain")


@archive_route(bp, "/<xnat:owner>/resources/<label>", methods=["DELETE"])
@frees_disk_space
def delete_resource(owner: str, label: str) -> Response:
    db = get_db()
    resource = _resource_or_404(db, _one_owner(owner, "own"), label)
    _delete_committed(db, [resource], archive_files.get().resource_dir(resource.relative_dir))
    return Response("", 200)


def _delete_committed(db: Session, rows: list, path: Path) -> None:
    """Delete database rows and, once that commit is durable, their file or folder."""
    deletion = Publication(archive_files.get(), "delete")
    deletion.discard(path)
    for row in rows:
        db.delete(row)
    deletion.commit(db)


# ----------------------------------------------------------------------------- listings, zips


def _zip_folder(resource: Resource) -> str:
    """Where a resource's files sit in a zip download, as XNAT lays it out."""
    owner = resource.owner
    parts: list[str]
    if owner.kind in ("project", "subject", "experiment"):
        parts = [owner.label]
    elif owner.kind in ("scan", "reconstruction"):
        parts = [owner.experiment.label, f"{owner.kind}s", owner.id]
    else:
        parts = [owner.experiment.label, "assessors", owner.label]
    parts += ["resources", resource.label, "files"]
    return "/".join(re.sub(r"[/\\]|^\.\.?$", "_", part) for part in parts)


def _files_response(found: list[Resource]) -> Response:
    db = get_db()
    rows = catalog.files_of(db, found)
    by_pk = {resource.pk: resource for resource in found}
    if request.args.get("format", "").lower() == "zip":
        store = archive_files.get()
        entries = [
            (
                f"{_zip_folder(by_pk[row.resource_pk])}/{row.path}",
                store.resource_dir(by_pk[row.resource_pk].relative_dir).joinpath(
                    *PurePosixPath(row.path).parts
                ),
            )
            for row in rows
        ]
        db.rollback()  # end the read transaction: the zip may stream for minutes
        name = _download_name(found)
        return Response(
            stream_zip(entries),
            mimetype="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
        )
    listing = [catalog.listing_row(by_pk[row.resource_pk], row) for row in rows]
    args = {k: v for k, v in request.args.items() if k.lower() != "columns"}
    return result_set(listing, args)


def _download_name(found: list[Resource]) -> str:
    name = found[0].label if len(found) == 1 else "files"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "files"


@archive_route(bp, "/<xnat:owner>/resources/<labels>/files", methods=["GET"])
def list_files(owner: str, labels: str) -> Response:
    db = get_db()
    found = resources_of(db, owners(owner, "read"), labels)
    if not found and "," not in labels:
        raise NotFound(f"Resource '{labels}' does not exist on {owner}.")
    return _files_response(found)


@archive_route(bp, "/<xnat:owner>/files", methods=["GET"])
def list_object_files(owner: str) -> Response:
    return _files_response(resources_of(get_db(), owners(owner, "read")))


# ----------------------------------------------------------------------------- one file


def _relpath(raw: str) -> PurePosixPath:
    try:
        return safe_relpath(raw)
    except UnsafePathError as exc:
        raise BadRequest(str(exc)) from exc


def _catalogued_file(db, owner: str, label: str, fpath: str, access: str):
    """(resource, relative path, catalog row) of one file, after the role check; 404 if absent."""
    rel = _relpath(fpath)
    resource = _resource_or_404(db, _one_owner(owner, access), label)
    row = catalog.find(db, resource, rel)
    if row is None:
        raise NotFound(f"File '{rel}' does not exist in resource '{resource.label}'.")
    return resource, rel, row


@archive_route(bp, FILE_RULE, methods=["GET"], merge_slashes=False)
def get_file(owner: str, label: str, fpath: str) -> Response:
    db = get_db()
    resource, rel, row = _catalogued_file(db, owner, label, fpath, "read")
    return send_catalogued(db, resource, rel, row.md5)



def _clashes(existing: set[str], new: list[StoredFile], overwrite: bool) -> str | None:
    """Why adding `new` to a resource holding `existing` paths would conflict, or None."""
    folders = {str(parent) for path in existing for parent in PurePosixPath(path).parents}
    for stored in new:
        path = str(stored.path)
        if path in existing and not overwrite:
            return f"File '{path}' already exists; add overwrite=true to replace it."
        if path in folders:
            return f"'{path}' is a folder in this resource."
        if any(str(parent) in existing for parent in stored.path.parents):
            return f"A parent of '{path}' is a file in this resource."
    return None


@archive_route(bp, FILE_RULE, methods=["PUT", "POST"], merge_slashes=False)
def put_file(owner: str, label: str, fpath: str) -> Response:
    rel = _relpath(fpath)
    check_resource_label(label)
    store = archive_files.get()
    db = get_db()
    parent = _one_owner(owner, "edit")
    db.commit()  # release the write lock while the body streams in

    staged, size, md5 = staged_upload(store)
    unpacked: Path | None = None
    try:
        if _flag("extract") and is_archive_name(rel.name):
            unpacked = store.staging_dir()
            files = unpack_upload(staged, unpacked, rel.name, rel.name)
            base = rel.parent
            sources = {base / f.path: unpacked.joinpath(*f.path.parts) for f in files}
            files = [StoredFile(base / f.path, f.size, f.md5) for f in files]
        else:
            files = [StoredFile(rel, size, md5)]
            sources = {rel: staged}
        operation = "extract" if unpacked is not None else "upload"
        _commit_files(db, Publication(store, operation), parent, label, files, sources)
    finally:
        store.discard(staged)
        if unpacked is not None:
            store.discard(unpacked)
    return Response("", 200)


def _commit_files(
    db: Session, publication: Publication, parent: ArchiveObject, label: str,
    files: list[StoredFile], sources: dict[PurePosixPath, Path],
) -> None:
    """Check and catalog the staged files (creating the resource if new), then publish them."""
    args = request.args
    fmt, content, tags = args.get("format", ""), args.get("content", ""), args.get("tags", "")
    reload(db, parent)
    resource = find_resource(db, parent, label)
    if resource is None:
        resource = create_resource(db, parent, label, fmt, content, tags)
    folder = publication.store.resource_dir(resource.relative_dir)
    try:
        files = ml_assets.admit_writes(db, resource, folder, files, sources)
    except HTTPException:
        db.rollback()
        raise
    existing = {row.path for row in catalog.files_of(db, [resource])}
    problem = _clashes(existing, files, _flag("overwrite"))
    if problem:
        db.rollback()
        raise Conflict(problem)
    for stored in files:
        publication.add(sources[stored.path], folder.joinpath(*stored.path.parts))
        catalog.record(db, resource, stored, fmt, content, tags)
    publication.commit(db)


@archive_route(bp, FILE_RULE, methods=["DELETE"], merge_slashes=False)
@frees_disk_space
def delete_file(owner: str, label: str, fpath: str) -> Response:
    """One file; in ML_MODELS and ML_DATASETS also a whole version folder (`<name>/v<N>`), in
    ML_RUNS a whole run folder (store/ml_assets.py), removed in one commit."""
    db = get_db()
    rel = _relpath(fpath)
    resource = _resource_or_404(db, _one_owner(owner, "own"), label)
    gone = ml_assets.deletion(db, resource, rel, catalog.find(db, resource, rel))
    if gone is None:
        raise NotFound(f"File '{rel}' does not exist in resource '{resource.label}'.")
    folder = archive_files.get().resource_dir(resource.relative_dir)
    target = folder.joinpath(*(gone.folder or rel).parts)
    _delete_committed(db, gone.rows, target)
    archive_files.get().prune(target.parent, stop_at=folder)
    return Response("", 200)
