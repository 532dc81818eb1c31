"""In-process announcements of archive changes, the hook the Event Service subscribes to.

`object_created` is sent for every archive object (project, subject, session, scan, assessor,
resource) a transaction inserts, inside that transaction, just before it commits, with the
session as `db`: whatever a receiver adds to `db` (the Event Service's outbox row) commits or
rolls back with the object itself, so no committed object can miss its event. Nobody has to
announce a creation: `watch_creations` finds them in the session's flushes. Receivers get `kind`
(project, subject, experiment, scan, resource, assessor), `xsi_type`, `project` (ID), `uri`,
`payload` (the object as the Container Service describes it: id, label, xsiType, uri,
project-id, ...) and `db`. A receiver must not block: work that may take long or must see the
commit goes into `after_commit(db, step)`.

`project_deleting` is sent inside the transaction that deletes a project, so that every service
keeping rows keyed on the project (jobs, wrapper switches, subscriptions, deliveries) deletes
them in the same commit: a new project with the same ID inherits nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from blinker import Namespace
from flask import Flask, current_app
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_signals = Namespace()

#: sent as object_created.send(app, kind=, xsi_type=, project=, uri=, payload=dict, db=Session)
#: before the transaction that inserted the object commits.
object_created = _signals.signal("object-created")

#: sent once per app as server_ready.send(app) when the server takes requests (`xnat-ml serve`
#: has bound its socket, or the first request arrived): work left from before a restart resumes.
server_ready = _signals.signal("server-ready")

_CREATED = "xnat_ml.created"  # Session.info: archive objects inserted in this transaction
_AFTER_COMMIT = "xnat_ml.after_commit"  # Session.info: steps to run once it commits
_READY = "xnat_ml.ready"  # app.extensions: server_ready was sent
_ready_lock = threading.Lock()

#: sent as project_deleting.send(app, project=Project, db=Session) before the deletion commits.
#: Receivers delete their rows of the project in `db` (raising aborts the deletion) and may
#: return a callable that runs once the deletion is committed (stop jobs, remove files).
project_deleting = _signals.signal("project-deleting")


def event_payload(obj) -> dict:
    """The properties the Container Service exposes for an archive object or resource."""
    from xnat_ml.server.store.models import Assessor, Experiment, Project, Resource, Scan, Subject

    payload = {
        "id": str(obj.pk if isinstance(obj, Resource) else obj.id),
        "label": obj.label,
        "xsiType": obj.xsi_type,
        "uri": obj.uri,
        "project-id": obj.project_obj.id,
    }
    if isinstance(obj, Project):
        payload["directory"] = str(obj.relative_dir)
    if isinstance(obj, Subject):
        payload["project"] = obj.project.id
    if isinstance(obj, Experiment):
        payload.update(subject_id=obj.subject.id, modality=obj.modality, date=obj.date)
    if isinstance(obj, Scan):
        payload.update(
            {
                "integer-id": int(obj.id) if obj.id.isdigit() else None,
                "scan-type": obj.type,
                "series-description": obj.series_description,
                "session-id": obj.experiment.id,
            }
        )
    if isinstance(obj, Resource):
        payload.update(
            {
                "integer-id": obj.pk,
                "format": obj.format,
                "content": obj.content,
                "parent-uri": obj.owner.uri,
            }
        )
    fields = getattr(obj, "fields", None)
    if fields:
        payload["fields"] = dict(fields)
    if isinstance(obj, Assessor):
        payload["session-id"] = obj.experiment.id
    return payload


def watch_creations(app: Flask, sessions: sessionmaker[Session]) -> None:
    """Send `object_created` from every session of `sessions` for the archive objects its
    transaction inserted, before it commits; run the `after_commit` steps once it has."""
    from xnat_ml.server.store.models import Assessor, Experiment, Project, Resource, Scan, Subject

    archive_types = (Project, Subject, Experiment, Scan, Assessor, Resource)

    def note_inserted(session: Session, _context) -> None:
        inserted = [obj for obj in session.new if isinstance(obj, archive_types)]
        if inserted:
            session.info.setdefault(_CREATED, []).extend(inserted)

    def announce(session: Session) -> None:
        session.flush()  # commit flushes after this hook: its last inserts are found here
        for obj in session.info.pop(_CREATED, ()):
            if inspect(obj).persistent:  # not deleted again, nor rolled back to a savepoint
                object_created.send(
                    app, kind=obj.kind, xsi_type=obj.xsi_type, project=obj.project_obj.id,
                    uri=obj.uri, payload=event_payload(obj), db=session,
                )  # fmt: skip

    def run_after_commit_steps(session: Session) -> None:
        run_after_commit(session.info.pop(_AFTER_COMMIT, []))

    def forget(session: Session, transaction) -> None:
        if transaction.parent is None:  # the whole transaction ended: committed or not
            session.info.pop(_CREATED, None)
            session.info.pop(_AFTER_COMMIT, None)

    event.listen(sessions, "after_flush", note_inserted)
    event.listen(sessions, "before_commit", announce)
    event.listen(sessions, "after_commit", run_after_commit_steps)
    event.listen(sessions, "after_transaction_end", forget)


def after_commit(db: Session, step: Callable[[], None]) -> None:
    """Run `step` once `db`'s current transaction commits (never if it rolls back)."""
    db.info.setdefault(_AFTER_COMMIT, []).append(step)


def announce_ready(app: Flask) -> None:
    """Send `server_ready` for `app`, the first time only, from a thread of its own: called in
    a request, the receivers' writes would wait for the write lock that request may hold."""
    with _ready_lock:
        if app.extensions.get(_READY):
            return
        app.extensions[_READY] = True
    threading.Thread(target=_send_ready, args=(app,), name="xnat-ml-resume", daemon=True).start()


def _send_ready(app: Flask) -> None:
    try:
        server_ready.send(app)
    except Exception:  # a service that cannot resume must not take the others with it
        log.exception("resuming work left from before the restart failed")


def retire_project(project, db) -> list[Callable[[], None]]:
    """Send `project_deleting` for `project` (not yet committed); the work left for after the
    commit, which `run_after_commit` does."""
    app = current_app._get_current_object()
    replies = project_deleting.send(app, project=project, db=db)
    return [after for _receiver, after in replies if after is not None]


def run_after_commit(work: list[Callable[[], None]]) -> None:
    """The change is committed: a step that fails is logged, it cannot undo it."""
    for step in work:
        try:
            step()
        except Exception:
            log.exception("a step after a commit failed")
