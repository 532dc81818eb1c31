"""The ML layer's rules on its project resources, where a real XNAT has only project roles.

A training run trusts what ML_MODELS, ML_CONFIGS, ML_DATASETS and ML_RUNS hold, so a Member
must not be able to change what an Owner installed, nor a run be forged after the fact:

- ML_MODELS and ML_CONFIGS are written by Owners (and site admins); `<name>/v<N>.derived/`
  beside a model version (evaluations, exports) also by Members. ML_DATASETS by Members.
- `<name>/v<N>/` in ML_MODELS and ML_DATASETS is write-once: a file there is created, never
  replaced with other bytes (identical bytes are a no-op, so a retried upload succeeds) nor
  deleted alone; an Owner deletes the whole version folder at once.
- `ML_RUNS/<run>/` belongs to the user whose credentials first wrote there (a job acts as its
  launcher); nobody else writes there, nobody deletes its files one by one (an Owner deletes
  the whole run), and once its status.json says `"state": "completed"` nothing changes.

The resource routes call `admit_writes` (file PUT and extract, after the body is staged) and
`deletion` (file DELETE); a 403 names the rule, a 409 the write-once file.
"""

from __future__ import annotations

import filecmp
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath

from sqlalchemy import DateTime, ForeignKey, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column
from werkzeug.exceptions import BadRequest, Conflict, Forbidden

from xnat_ml.bounded_json import load_json
from xnat_ml.layout import (
    CONFIGS_RESOURCE,
    DATASETS_RESOURCE,
    MODELS_RESOURCE,
    RUNS_RESOURCE,
)
from xnat_ml.server import auth
from xnat_ml.server.store import catalog
from xnat_ml.server.store.filestore import StoredFile
from xnat_ml.server.store.models import Base, Project, Resource, User, utcnow

OWNER_WRITTEN = (MODELS_RESOURCE, CONFIGS_RESOURCE)
VERSIONED = {MODELS_RESOURCE: "model", DATASETS_RESOURCE: "dataset"}
ML_RESOURCES = (*OWNER_WRITTEN, DATASETS_RESOURCE, RUNS_RESOURCE)
_VERSION = re.compile(r"[^/]+/v\d+")  # `<name>/v<N>`; `v<N>.derived` is not a version
_DERIVED = re.compile(r"[^/]+/v\d+\.derived(/.*)?")
STATUS_FILE = "status.json"
_STATUS_LIMIT = 1 << 20  # a status.json larger than this is not read (and so not sealed)


class RunOwner(Base):
    """Who owns `ML_RUNS/<run>/`: the user whose credentials first wrote into it."""

    __tablename__ = "ml_run_owners"

    resource_pk: Mapped[int] = mapped_column(
        ForeignKey("resources.pk", ondelete="CASCADE"), primary_key=True
    )
    run: Mapped[str] = mapped_column(String(255), primary_key=True)
    username: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def governs(resource: Resource) -> bool:
    """Whether the ML rules apply: a project resource with one of the ML labels."""
    return resource.project_pk is not None and resource.label in ML_RESOURCES


def _version_of(label: str, path: PurePosixPath) -> str | None:
    """`<name>/v<N>` when `path` lies in a write-once version of `label`, else None."""
    if label not in VERSIONED or len(path.parts) < 3:
        return None
    head = "/".join(path.parts[:2])
    return head if _VERSION.fullmatch(head) else None


def _require_owner(user: User, project: Project, label: str) -> None:
    if not auth.may(user, project, "own"):
        raise Forbidden(f"{label}: only project Owners may write here.")


def _same_bytes(folder: Path, row: catalog.ResourceFile, new: StoredFile, source: Path) -> bool:
    if (row.size, row.md5) != (new.size, new.md5):
        return False
    return filecmp.cmp(folder.joinpath(*PurePosixPath(row.path).parts), source, shallow=False)


def admit_writes(
    db: Session,
    resource: Resource,
    folder: Path,
    files: list[StoredFile],
    sources: dict[PurePosixPath, Path],
) -> list[StoredFile]:
    """The files of an upload that are to be written, after the ML rules (403/409/400):
    identical bytes re-sent to a write-once place are dropped (a no-op)."""
    if not governs(resource):
        return files
    user, project, label = auth.require_login(), resource.project, resource.label
    if label in OWNER_WRITTEN and not (
        label == MODELS_RESOURCE and all(_DERIVED.fullmatch(str(f.path)) for f in files)
    ):
        _require_owner(user, project, label)
    existing = {row.path: row for row in catalog.files_of(db, [resource])}
    sealed = _claim_runs(db, resource, folder, user, files) if label == RUNS_RESOURCE else set()
    admitted = []
    for new in files:
        path, old = str(new.path), existing.get(str(new.path))
        completed = new.path.parts[0] in sealed
        if not (completed or _version_of(label, new.path)):
            admitted.append(new)
            continue
        if old is not None and _same_bytes(folder, old, new, sources[new.path]):
            continue  # a retried upload of what is already there
        if completed:
            run = new.path.parts[0]
            raise Conflict(f"{label}/{path}: run {run} is completed; it cannot change.")
        if old is not None:
            raise Conflict(f"{label}/{path}: {VERSIONED[label]} versions are write-once.")
        admitted.append(new)
    return admitted


def _claim_runs(
    db: Session, resource: Resource, folder: Path, user: User, files: list[StoredFile]
) -> set[str]:
    """Check (and on first write record) the owner of each run the files go into; returns the
    completed ones among them."""
    runs = sorted({f.path.parts[0] for f in files if len(f.path.parts) > 1})
    if any(len(f.path.parts) < 2 for f in files):
        raise BadRequest(f"{RUNS_RESOURCE}: files belong in a run folder ({RUNS_RESOURCE}/<run>/).")
    completed = set()
    for run in runs:
        owner = db.get(RunOwner, (resource.pk, run))
        if owner is None:
            db.add(RunOwner(resource_pk=resource.pk, run=run, username=user.username))
        elif owner.username != user.username:
            raise Forbidden(
                f"{RUNS_RESOURCE}/{run}: the run belongs to {owner.username}; "
                "only its owner writes here."
            )
        if _completed(db, resource, folder, run):
            completed.add(run)
    db.flush()
    return completed


def _completed(db: Session, resource: Resource, folder: Path, run: str) -> bool:
    row = catalog.find(db, resource, PurePosixPath(run, STATUS_FILE))
    if row is None or row.size > _STATUS_LIMIT:
        return False
    try:
        status = load_json(folder.joinpath(run, STATUS_FILE).read_bytes(), STATUS_FILE)
    except (OSError, ValueError):
        return False
    return isinstance(status, dict) and status.get("state") == "completed"


@dataclass(frozen=True)
class Deletion:
    """What a DELETE of `path` in a resource removes: its file rows, and the folder they
    share when it is a whole version or run."""

    rows: list[catalog.ResourceFile]
    folder: PurePosixPath | None  # a folder removed whole, else None (one file)


def deletion(
    db: Session, resource: Resource, path: PurePosixPath, row: catalog.ResourceFile | None
) -> Deletion | None:
    """What deleting `path` removes under the ML rules (403/409); None when nothing is there.
    The caller has already been checked as an Owner."""
    if not governs(resource):
        return Deletion([row], None) if row is not None else None
    label = resource.label
    if row is not None:
        if label == RUNS_RESOURCE:
            raise Conflict(
                f"{label}/{path}: run files are deleted only with their whole run "
                f"({label}/{path.parts[0]})."
            )
        if version := _version_of(label, path):
            raise Conflict(
                f"{label}/{path}: {VERSIONED[label]} versions are write-once; "
                f"delete the whole version ({label}/{version})."
            )
        return Deletion([row], None)
    whole_run = label == RUNS_RESOURCE and len(path.parts) == 1
    whole_version = label in VERSIONED and _VERSION.fullmatch(str(path))
    if not (whole_run or whole_version):
        return None
    prefix = f"{path}/"
    rows = [r for r in catalog.files_of(db, [resource]) if r.path.startswith(prefix)]
    if not rows:
        return None
    if whole_run:
        db.execute(
            delete(RunOwner).where(RunOwner.resource_pk == resource.pk, RunOwner.run == str(path))
        )
    return Deletion(rows, path)
