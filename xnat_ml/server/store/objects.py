"""Archive objects by path: the lookup every route that names an object goes through.

`resolve_object` maps an archive path (`projects/P/subjects/S/experiments/E/scans/1`,
`experiments/E`, ...) to its ORM object, checking the caller's project role as soon as the
project is known, so callers outside a project learn nothing about its content. `new_accession`
hands out the never-reused accession IDs (XNAT_E00042) of new objects.
"""

from __future__ import annotations

from flask import current_app
from sqlalchemy import or_, select
from werkzeug.exceptions import BadRequest, NotFound

from xnat_ml.server import auth
from xnat_ml.server.store import shares
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import (
    Accession,
    ArchiveObject,
    Assessor,
    Experiment,
    Project,
    Reconstruction,
    Scan,
    Subject,
)
from xnat_ml.xnat.uris import ObjectPath, UnsafeName, UriError, parse_path


def _named(model, name: str):
    """Label or accession ID, as XNAT accepts either below a parent."""
    return or_(model.label == name, model.id == name)


def lookup(parent: ArchiveObject | None, collection: str, name: str) -> ArchiveObject | None:
    """The object `name` of `collection` below `parent` (top level when None), or None."""
    db = get_db()
    if parent is None:
        model = {"projects": Project, "subjects": Subject, "experiments": Experiment}.get(
            collection
        )
        found = db.scalar(select(model).where(model.id == name)) if model else None
        if found is None and model is Experiment:  # assessors are experiments to XNAT
            found = db.scalar(select(Assessor).where(Assessor.id == name))
        return found
    if isinstance(parent, Project) and collection == "subjects":
        return db.scalar(
            select(Subject).where(Subject.project_pk == parent.pk, _named(Subject, name))
        ) or shares.shared_into(db, parent, Subject, name)
    if isinstance(parent, Project | Subject) and collection == "experiments":
        owner = Experiment.project_pk if isinstance(parent, Project) else Experiment.subject_pk
        found = db.scalar(select(Experiment).where(owner == parent.pk, _named(Experiment, name)))
        if found is None and isinstance(parent, Project):
            found = shares.shared_into(db, parent, Experiment, name)
        return found
    if isinstance(parent, Experiment) and collection == "scans":
        return db.scalar(select(Scan).where(Scan.experiment_pk == parent.pk, Scan.id == name))
    if isinstance(parent, Experiment) and collection == "reconstructions":
        return db.scalar(select(Reconstruction).where(
            Reconstruction.experiment_pk == parent.pk, Reconstruction.id == name))  # fmt: skip
    if isinstance(parent, Experiment) and collection == "assessors":
        return db.scalar(
            select(Assessor).where(Assessor.experiment_pk == parent.pk, _named(Assessor, name))
        )
    return None


def describe_missing(parent: ArchiveObject | None, collection: str, name: str) -> str:
    kind = {
        "projects": "Project",
        "subjects": "Subject",
        "experiments": "Experiment",
        "scans": "Scan",
        "assessors": "Assessor",
        "reconstructions": "Reconstruction",
    }.get(collection, collection)
    where = f" in {parent.kind} '{parent.label}'" if parent is not None else ""
    return f"{kind} {name!r} does not exist{where}."  # repr: odd characters stay visible


def split_path(path: str) -> list[tuple[str, str]]:
    """'data/archive/projects/P/subjects/S' → [('projects', 'P'), ('subjects', 'S')], for a
    path as the router hands it (decoded); 404 if it is not an object path, 400 if a name in
    it is one no object can have."""
    try:
        return list(parse_path(path, quoted=False).steps)
    except UnsafeName as exc:
        raise BadRequest(f"{exc.problem}.") from None
    except UriError:
        raise NotFound(f"{path[:200]!r} is not an archive object path.") from None


def resolve_object(path: str | ObjectPath, access: str | None = "read") -> ArchiveObject:
    """The object at an archive path (router text, or parsed); 404 if missing, 401/403 unless
    the caller has `access`.

    `access` is read, edit or own (see auth.require_project_role); None skips the role check
    (login is still required). The role is checked as soon as the project is known, so callers
    outside a project learn nothing about its content.
    """
    auth.require_login()
    steps = list(path.steps) if isinstance(path, ObjectPath) else split_path(path)
    return walk(steps, access)


def walk(pairs: list[tuple[str, str]], access: str | None) -> ArchiveObject:
    """Follow (collection, name) steps from the top; 404 at the first missing one.

    An object shared into the project of the path is read there with that project's role;
    anything more needs the role in the project that owns it."""
    obj: ArchiveObject | None = None
    for collection, name in pairs:
        found = lookup(obj, collection, name)
        if found is None:
            raise NotFound(describe_missing(obj, collection, name))
        if obj is None and access is not None:
            _require_top_level(found, access)
        elif access not in (None, "read") and isinstance(obj, Project):
            if found.project_obj is not obj:  # shared in: the owner's role decides
                auth.require_project_role(found.project_obj, access)
        obj = found
    assert obj is not None
    return obj


def _require_top_level(found: ArchiveObject, access: str) -> None:
    """`access` to an object named without its project (/data/experiments/E): reading is also
    allowed through a project it is shared into."""
    user = auth.require_login()
    if access == "read" and isinstance(found, Subject | Experiment):
        if any(auth.may(user, p, "read") for p in shares.sharing_projects(get_db(), found)):
            return
    auth.require_project_role(found.project_obj, access)


def new_accession(kind_letter: str) -> str:
    """The next accession ID, e.g. XNAT_E00042 (never reused, also after deletions)."""
    db = get_db()
    accession = Accession(prefix=kind_letter)
    db.add(accession)
    db.flush()
    return f"{current_app.config['SITE_ID']}_{kind_letter}{accession.pk:05d}"
