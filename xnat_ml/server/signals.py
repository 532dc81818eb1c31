"""In-process announcements of archive changes, the hook the Event Service subscribes to.

Senders call `announce_created(obj)` after the change is committed, so a receiver that reads the
archive sees the new object. Receivers get `kind` (project, subject, experiment, scan, resource,
assessor), `xsi_type`, `project` (ID), `uri` and `payload` (the object as the Container Service
describes it: id, label, xsiType, uri, project-id, ...). A receiver must not block: long work
belongs in its own thread or process.

`project_deleting` is sent inside the transaction that deletes a project, so that every service
keeping rows keyed on the project (jobs, wrapper switches, subscriptions, deliveries) deletes
them in the same commit: a new project with the same ID inherits nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from blinker import Namespace
from flask import current_app

log = logging.getLogger(__name__)

_signals = Namespace()

#: sent as object_created.send(app, kind=, xsi_type=, project=, uri=, payload=dict)
object_created = _signals.signal("object-created")

#: sent as project_deleting.send(app, project=Project, db=Session) before the deletion commits.
#: Receivers delete their rows of the project in `db` (raising aborts the deletion) and may
#: return a callable that runs once the deletion is committed (stop jobs, remove files).
project_deleting = _signals.signal("project-deleting")


def event_payload(obj) -> dict:
    """The properties the Container Service exposes for an archive object or resource."""
    from xnat_ml.server.models import Assessor, Experiment, Project, Resource, Scan, Subject

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


def announce_created(obj) -> None:
    """Send `object_created` for a committed object; a failing receiver is logged, not raised."""
    app = current_app._get_current_object()
    try:
        object_created.send(
            app,
            kind=obj.kind,
            xsi_type=obj.xsi_type,
            project=obj.project_obj.id,
            uri=obj.uri,
            payload=event_payload(obj),
        )
    except Exception:  # a subscriber's bug must not turn a committed creation into a 500
        log.exception("object_created receiver failed for %s", obj.uri)


def retire_project(project, db) -> list[Callable[[], None]]:
    """Send `project_deleting` for `project` (not yet committed); the work left for after the
    commit, which `run_after_commit` does."""
    app = current_app._get_current_object()
    replies = project_deleting.send(app, project=project, db=db)
    return [after for _receiver, after in replies if after is not None]


def run_after_commit(work: list[Callable[[], None]]) -> None:
    """The deletion is committed: a step that fails is logged, it cannot undo it."""
    for step in work:
        try:
            step()
        except Exception:
            log.exception("clean-up after a project deletion failed")
