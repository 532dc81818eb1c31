"""A job's writes, undoable until the job ends: its results are all in the archive, or none.

A request authenticated by an alias token bound to a job (`AliasToken.job_id`, also through a
token or session it minted) may change the archive: the command's own uploads (roi-to-mask puts
the image NIfTI on the scan itself) and the output handlers' uploads after it. Each change is
logged in `job_writes`, in the transaction that makes it (SQLAlchemy flush hooks, so every route
is covered: file PUT and overwrite, extract, resource create and delete, file delete, ROI
collections, objects created over the API, the DICOM import):

- create: a subject, session, scan, assessor, resource or file row is inserted; undone by
  deleting it with its folder or file;
- update: such a row changes (an overwritten file, an ROI collection's fields); undone by putting
  the old row back, and an overwritten file's old bytes;
- delete: a resource or file row is deleted; undone by inserting the row(s) and moving the old
  bytes back.

Old bytes are kept aside as hard links made before the commit that replaces or removes them, in
`DATA/job-writes/<job id>/` (outside `archive/`: never listed nor served, no extra space). When
the job ends Complete, `keep` drops its log and links; when it ends any other way, `undo` rolls
its writes back in reverse order, all in one catalogue commit through the journal
(journal.Publication, operation `undo`), so a crash leaves the undo either not done or owed and
finished at start-up. `settle` at start-up completes what a crash between a job's end and its
undo (or keep) left. Not logged: deleting a project, subject, session, scan or assessor (a job's
token may do it, but it is not undone).

Progress records are the exception: a file a job creates or overwrites inside a run folder of
the project resource ML_RUNS (`ML_RUNS/<run>/...`), and the creation of that resource, are not
undone, so a training run killed, failed or out of time keeps its checkpoints and status and a
relaunch resumes from them (docs/training.md). Everything else a job writes stays all-or-none.
The log notes each run folder the job wrote (action `progress`); when the job ends other than
Complete, a run whose status.json still says `running` or `prepared` (its job was SIGKILLed or
lost before it could say how it ended) is marked `failed` with that reason, in the undo's commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path, PurePosixPath

from flask import Flask, has_request_context
from sqlalchemy import JSON, DateTime, String, delete, event, insert, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from xnat_ml.atomic import fsync_path
from xnat_ml.containers import jobs
from xnat_ml.containers.jobs import Job
from xnat_ml.layout import RUNS_RESOURCE
from xnat_ml.server import auth
from xnat_ml.server.store.catalog import ResourceFile
from xnat_ml.server.store.db import session_factory
from xnat_ml.server.store.filestore import FileStore
from xnat_ml.server.store.journal import Publication
from xnat_ml.server.store.models import (
    Assessor,
    Base,
    Experiment,
    Project,
    Reconstruction,
    Resource,
    Scan,
    Subject,
    utcnow,
)

log = logging.getLogger(__name__)

KEPT_DIR = "job-writes"
RUN_STATUS = "status.json"
UNFINISHED = ("running", "prepared")  # run states only a live job may leave
ENDED = "its job ended before the run could say how (killed or lost); relaunch to resume"
# Rows whose creation and change a job's log records (deletions: resources and files only).
TRACKED = {model.__tablename__: model
           for model in (Subject, Experiment, Scan, Assessor, Reconstruction, Resource,
                         ResourceFile)}  # fmt: skip


class JobWrite(Base):
    """One archive change made with a job's token: what to do to take it back (see above).
    `row` is the row as it was before (update, delete; a deleted resource also lists its files
    under `files`); `kept` the data-dir path of the bytes it replaced or removed ("" if none)."""

    __tablename__ = "job_writes"

    pk: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(index=True)
    action: Mapped[str] = mapped_column(String(8))
    table_name: Mapped[str] = mapped_column(String(32))
    row_pk: Mapped[int]
    row: Mapped[dict] = mapped_column(JSON, default=dict)
    kept: Mapped[str] = mapped_column(String(2048), default="")
    created: Mapped[datetime] = mapped_column(default=utcnow)


# ----------------------------------------------------------------------------- logging writes


def init_app(app: Flask) -> None:
    """Log job writes from now on; settle what a crash left (after journal.init_app)."""
    store = FileStore(app.config["DATA_DIR"])
    sessions = session_factory(app)
    event.listen(sessions, "before_flush", lambda db, _ctx, _objs: _log_changes(db, store))
    event.listen(sessions, "after_flush", lambda db, _ctx: _log_creations(db))
    settle(app)


def _writing_job() -> int | None:
    """The job whose token authenticated this request, if any."""
    if not has_request_context():
        return None
    token = auth.current_token()
    return token.job_id if token is not None else None


def _log_changes(db: Session, store: FileStore) -> None:
    """Before a flush: log updates and deletions with the rows as the database still has them."""
    job_id = _writing_job()
    if job_id is None:
        return
    for obj in [o for o in db.dirty if _tracked(o) and db.is_modified(o)]:
        if _progress(db, obj):
            _note_run(db, job_id, obj)
            continue
        kept = _keep_file(db, store, job_id, obj) if isinstance(obj, ResourceFile) else ""
        _add(db, job_id, "update", obj, _stored_row(db, obj), kept)
    for obj in db.deleted:
        if isinstance(obj, ResourceFile):
            kept = _keep_file(db, store, job_id, obj)
            _add(db, job_id, "delete", obj, _stored_row(db, obj), kept)
        elif isinstance(obj, Resource):
            row = _stored_row(db, obj)
            files = db.execute(select(ResourceFile.__table__)
                               .where(ResourceFile.resource_pk == obj.pk)).mappings()  # fmt: skip
            row["files"] = [_plain(dict(f)) for f in files]
            kept = _keep(store, job_id, store.data_dir.joinpath(*obj.relative_dir.parts))
            _add(db, job_id, "delete", obj, row, kept)


def _log_creations(db: Session) -> None:
    """After a flush (keys assigned): log new rows. A file in a resource the job created is
    not logged on its own: the resource's undo takes it."""
    job_id = _writing_job()
    if job_id is None:
        return
    new = []
    for obj in [o for o in db.new if _tracked(o)]:
        if _progress(db, obj):
            _note_run(db, job_id, obj)
        else:
            new.append(obj)
    if not new:
        return
    created = set(db.scalars(select(JobWrite.row_pk).where(
        JobWrite.job_id == job_id, JobWrite.action == "create",
        JobWrite.table_name == Resource.__tablename__)))  # fmt: skip
    created |= {obj.pk for obj in new if isinstance(obj, Resource)}
    for obj in new:
        if not (isinstance(obj, ResourceFile) and obj.resource_pk in created):
            _add(db, job_id, "create", obj, {}, "")


def _tracked(obj) -> bool:
    return getattr(obj, "__tablename__", None) in TRACKED


def _progress(db: Session, obj) -> bool:
    """A progress record (see above): a file in a run folder of a project's ML_RUNS, or the
    ML_RUNS resource itself."""
    if isinstance(obj, ResourceFile):
        resource = db.get(Resource, obj.resource_pk)
        return resource is not None and "/" in obj.path.strip("/") and _progress(db, resource)
    return (isinstance(obj, Resource) and obj.label == RUNS_RESOURCE
            and obj.project_pk is not None and obj.subject_pk is None
            and obj.experiment_pk is None and obj.scan_pk is None
            and obj.assessor_pk is None)  # fmt: skip


def _note_run(db: Session, job_id: int, obj) -> None:
    """Log (once) the run folder a progress record belongs to, for `_end_runs`."""
    if not isinstance(obj, ResourceFile):
        return
    run = obj.path.strip("/").split("/")[0]
    noted = db.scalars(select(JobWrite.row).where(
        JobWrite.job_id == job_id, JobWrite.action == "progress",
        JobWrite.row_pk == obj.resource_pk))  # fmt: skip
    if {"run": run} not in list(noted):
        db.execute(insert(JobWrite).values(job_id=job_id, action="progress", row_pk=obj.resource_pk,
                                           table_name=Resource.__tablename__, row={"run": run},
                                           kept=""))  # fmt: skip
        _name_run(db, job_id, f"{RUNS_RESOURCE}/{run}")


def _name_run(db: Session, job_id: int, run: str) -> None:
    """The job's record names the run it writes, from its first write there on: its message
    and a history entry (same status), so a training job's record says where its run is."""
    status = db.scalar(select(Job.status).where(Job.id == job_id))
    if status not in jobs.UNFINISHED:
        return
    message = f"writing run {run}"
    db.execute(update(Job).where(Job.id == job_id).values(message=message))
    db.execute(insert(jobs.JobEvent).values(job_id=job_id, status=status, time=utcnow(),
                                            message=message))  # fmt: skip


def _add(db: Session, job_id: int, action: str, obj, row: dict, kept: str) -> None:
    db.execute(insert(JobWrite).values(job_id=job_id, action=action, table_name=obj.__tablename__,
                                       row_pk=obj.pk, row=row, kept=kept))  # fmt: skip


def _stored_row(db: Session, obj) -> dict:
    table = obj.__table__
    row = db.execute(select(table).where(table.c.pk == obj.pk)).mappings().one()
    return _plain(dict(row))


def _plain(row: dict) -> dict:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _file_path(db: Session, store: FileStore, row: ResourceFile) -> Path | None:
    resource = db.get(Resource, row.resource_pk)
    if resource is None:
        return None
    return store.resource_dir(resource.relative_dir).joinpath(*PurePosixPath(row.path).parts)


def _keep_file(db: Session, store: FileStore, job_id: int, row: ResourceFile) -> str:
    path = _file_path(db, store, row)
    return _keep(store, job_id, path) if path is not None else ""


def _keep(store: FileStore, job_id: int, path: Path) -> str:
    """Hard-link a file, or every file of a folder, into the job's kept-aside folder, durably,
    before the commit that replaces or removes it; its data-dir path ("" if nothing is there)."""
    if not path.exists():
        return ""
    kept = store.data_dir / KEPT_DIR / str(job_id) / uuid.uuid4().hex
    kept.parent.mkdir(parents=True, exist_ok=True)
    folders = [kept.parent]
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            into = kept / Path(root).relative_to(path)
            into.mkdir(parents=True, exist_ok=True)
            folders.append(into)
            for name in files:
                os.link(Path(root) / name, into / name)
    else:
        os.link(path, kept)
    for folder in folders:
        fsync_path(folder)
    return store.relative(kept)


# ----------------------------------------------------------------------------- ends of jobs


def keep(app: Flask, job_id: int) -> None:
    """The job completed: its writes stay; forget how to undo them."""
    with session_factory(app)() as db:
        db.execute(delete(JobWrite).where(JobWrite.job_id == job_id))
        db.commit()
    drop_kept(app, job_id)


def undo(app: Flask, job_id: int) -> None:
    """The job failed: take back every write it made, newest first, in one commit."""
    store = FileStore(app.config["DATA_DIR"])
    with session_factory(app)() as db:
        entries = list(db.scalars(
            select(JobWrite).where(JobWrite.job_id == job_id).order_by(JobWrite.pk.desc())))
        if entries:
            publication = Publication(store, "undo")
            for entry in entries:
                _undo_one(db, store, publication, entry)
                db.flush()
            _end_runs(db, store, publication, entries)
            db.execute(delete(JobWrite).where(JobWrite.job_id == job_id))
            publication.commit(db)
            log.info("container %s: undid its %d archive write(s)", job_id, len(entries))
    drop_kept(app, job_id)


def forget(db: Session, job_ids: list[int]) -> None:
    """Drop the logs of jobs deleted with their project, in the deleting transaction (their
    kept bytes go with `drop_kept` once it commits, or at the next start-up)."""
    db.execute(delete(JobWrite).where(JobWrite.job_id.in_(job_ids)))


def settle(app: Flask) -> None:
    """At start-up: finish keeping or undoing the writes of jobs that ended before a crash let
    that happen; remove kept bytes no log names (writes never committed, logs done)."""
    with session_factory(app)() as db:
        logged = set(db.scalars(select(JobWrite.job_id).distinct()))
        status = dict(db.execute(select(Job.id, Job.status).where(Job.id.in_(logged))).all())
    for job_id in sorted(logged):
        state = status.get(job_id)
        if state == jobs.COMPLETE or state is None:
            keep(app, job_id)
        elif state in jobs.FINAL_STATUSES:
            log.warning("container %s ended %s before its writes were undone: undoing", job_id,
                        state)
            undo(app, job_id)
    kept = Path(app.config["DATA_DIR"]) / KEPT_DIR
    if kept.is_dir():
        for folder in kept.iterdir():
            if not (folder.name.isdigit() and int(folder.name) in logged):
                shutil.rmtree(folder, ignore_errors=True)


def drop_kept(app: Flask, job_id: int) -> None:
    """Remove the job's kept-aside bytes (its log is gone)."""
    shutil.rmtree(Path(app.config["DATA_DIR"]) / KEPT_DIR / str(job_id), ignore_errors=True)


def _end_runs(db: Session, store: FileStore, publication: Publication, entries) -> None:
    """The runs this job wrote that still say `running` or `prepared` say `failed` (see above)."""
    runs = sorted({(e.row_pk, e.row["run"]) for e in entries if e.action == "progress"})
    for resource_pk, run in runs:
        row = db.scalars(select(ResourceFile).where(
            ResourceFile.resource_pk == resource_pk,
            ResourceFile.path == f"{run}/{RUN_STATUS}")).first()  # fmt: skip
        path = _file_path(db, store, row) if row is not None else None
        try:
            status = json.loads(path.read_bytes()) if path is not None else None
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict) or status.get("state") not in UNFINISHED:
            continue
        was = status["state"]
        status.update(state="failed", message=ENDED, updated=time.time())
        data = (json.dumps(status, indent=2) + "\n").encode()
        fd, staged = tempfile.mkstemp(prefix="run-status-", dir=store.staging)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        publication.add(Path(staged), path)
        row.size, row.md5 = len(data), hashlib.md5(data).hexdigest()
        log.info("run %s: its job ended while it said %s; marked failed", run, was)


def _undo_one(db: Session, store: FileStore, publication: Publication, entry: JobWrite) -> None:
    if entry.action == "progress":  # kept: see above
        return
    model = TRACKED[entry.table_name]
    current = db.get(model, entry.row_pk)
    kept = store.data_dir / entry.kept if entry.kept else None
    if entry.action == "create":
        if current is not None:
            path = (_file_path(db, store, current) if isinstance(current, ResourceFile)
                    else store.data_dir.joinpath(*current.relative_dir.parts))  # fmt: skip
            if path is not None:
                publication.discard(path)
            db.delete(current)
        return
    row = _typed(model, entry.row)
    if entry.action == "update":
        if current is None:
            return
        for key, value in row.items():
            setattr(current, key, value)
        target = _file_path(db, store, current) if isinstance(current, ResourceFile) else None
    else:  # delete: only resources and files are logged
        owner = _owner_of(db, row) if model is Resource else db.get(Resource, row["resource_pk"])
        if current is not None or owner is None:
            return
        files = row.pop("files", [])
        db.execute(insert(model.__table__).values(**row))
        for file_row in files:
            db.execute(insert(ResourceFile.__table__).values(**_typed(ResourceFile, file_row)))
        restored = db.get(model, entry.row_pk)
        target = (store.data_dir.joinpath(*restored.relative_dir.parts) if model is Resource
                  else _file_path(db, store, restored))  # fmt: skip
    if kept is not None and target is not None and kept.exists():
        if target in publication.discards:  # a write the undo removes earlier in this list
            publication.discards.remove(target)
        publication.add(kept, target)


def _owner_of(db: Session, row: dict):
    for model in (Subject, Experiment, Scan, Assessor, Reconstruction):
        if row.get(f"{model.kind}_pk") is not None:
            return db.get(model, row[f"{model.kind}_pk"])
    return db.get(Project, row["project_pk"]) if row.get("project_pk") is not None else None


def _typed(model, row: dict) -> dict:
    """A logged row as column values again (timestamps were stored as ISO text)."""
    out = dict(row)
    for column in model.__table__.columns:
        if isinstance(column.type, DateTime) and isinstance(out.get(column.name), str):
            out[column.name] = datetime.fromisoformat(out[column.name])
    return out
