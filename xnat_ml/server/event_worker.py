"""The Event Service's dispatcher: the outbox, one worker thread per app, launches as the owner.

Creation of archive objects arrives through `signals.object_created` inside the creating
transaction; when a subscription wants its type, the receiver stores the event (and who caused
it) in the outbox in that transaction, and queues it once committed. One worker thread per app
matches queued events against the active subscriptions and launches their wrappers, so a slow or
failing launch never delays or fails the request that created the object. Delivery is at least
once and launches at most once: events still pending when the server stops are delivered after
the restart (`server_ready`), and each launch records its delivery in the job's own transaction
under a unique (event, subscription), so a redelivered event skips what it already launched.

Launches happen in process (launches.py), as the subscription's owner, with the checks a
request of theirs gets: no credential leaves the server, and a stored event names no address
(the request's `Host` is the client's to choose; a restart may move the server to another
port), so an event stored before a restart is delivered whatever the new address.

`event_service` is the Flask extension: `create_app` starts the worker and connects the
receivers; the REST API (events.py) reaches the worker as `event_service.get()`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import nullcontext
from functools import partial
from typing import Any

from flask import Flask, has_request_context
from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from werkzeug.exceptions import Conflict, HTTPException

from xnat_ml.errors import XnatMlError
from xnat_ml.events import Event, Match, Subscription, event_type_for
from xnat_ml.events.dispatch import Delivery, Postponed, deliver, plan
from xnat_ml.server import auth
from xnat_ml.server.extension import Extension
from xnat_ml.server.faults import fault_point
from xnat_ml.server.launches import launch_on
from xnat_ml.server.store import signals
from xnat_ml.server.store.db import get_db, reader_factory, session_factory
from xnat_ml.server.store.event_store import (
    DELIVERED,
    PENDING,
    DeliveryRow,
    EventRow,
    SubscriptionRow,
)
from xnat_ml.server.store.models import Project, User, utcnow
from xnat_ml.server.store.objects import resolve_object

log = logging.getLogger(__name__)

RETRY_MAX_S = 30.0  # longest pause between attempts at an event whose launch was postponed


class EventService(Extension["EventWorker"]):
    """The app's event worker, with the receivers that feed it: creations go to the outbox,
    a deleted project takes its events along, and events left from before a restart are
    delivered once the server takes requests."""

    key = "xnat_ml.events"

    def start(self, app: Flask) -> EventWorker:
        worker = EventWorker(app)
        signals.object_created.connect(_on_object_created, sender=app)
        signals.project_deleting.connect(_retire_project_events, sender=app)
        signals.server_ready.connect(worker.resume, sender=app, weak=False)
        return worker


event_service = EventService()


class EventWorker:
    """One daemon thread per app that delivers stored events (outbox ids), in order.

    Active subscriptions are cached between changes (the REST handlers call `invalidate`), so
    the many events nobody subscribed to cost no database access. An event whose launch found
    the store busy is tried again, with growing pauses, until it goes through.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.queue: queue.Queue[int] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active: list[Subscription] | None = None
        self._generation = 0

    def invalidate(self) -> None:
        with self._lock:
            self._active = None
            self._generation += 1

    def active(self, db: Session | None = None) -> list[Subscription]:
        """The active subscriptions; read with `db` when given (inside a request, the request's
        own session: a second connection would wait for the write lock the request holds).
        No lock is held while reading, so a reader never waits on another thread's database
        work; a read that an `invalidate` overtook is used once but not cached."""
        with self._lock:
            cached, generation = self._active, self._generation
        if cached is not None:
            return cached
        with nullcontext(db) if db is not None else session_factory(self.app)() as read:
            rows = read.scalars(select(SubscriptionRow).where(SubscriptionRow.active))
            fresh = [row.to_subscription() for row in rows]
        with self._lock:
            if self._generation == generation:
                self._active = fresh
        return fresh

    def wants(self, event_type_id: str, db: Session | None = None) -> bool:
        return any(s.event_filter.event_type == event_type_id for s in self.active(db))

    def resume(self, _app: Flask | None = None) -> None:
        """`server_ready`: queue the events a previous process stored but did not deliver."""
        with reader_factory(self.app)() as db:
            pending = list(db.scalars(
                select(EventRow.id).where(EventRow.state == PENDING).order_by(EventRow.id)
            ))  # fmt: skip
        if pending:
            log.info("delivering %d event(s) stored before the restart", len(pending))
        for event_id in pending:
            self.submit(event_id)

    def submit(self, event_id: int) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="xnat-ml-events", daemon=True
                )
                self._thread.start()
        self.queue.put(event_id)

    def _run(self) -> None:
        while True:
            event_id = self.queue.get()
            try:
                self._deliver_until_done(event_id)
            except Exception:  # keep the worker alive whatever one event does
                log.exception("event %s could not be delivered", event_id)
            finally:
                self.queue.task_done()

    def _deliver_until_done(self, event_id: int) -> None:
        pause = 0.5
        while True:
            try:
                with self.app.app_context():
                    self.process(event_id)
                return
            except Postponed as exc:
                log.warning("event %s: %s; trying again in %.1f s", event_id, exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)

    def process(self, event_id: int) -> list[Delivery]:
        """Deliver a pending event to the subscriptions that have no delivery of it yet, then
        mark it delivered with the deliveries that launched nothing (those that did were
        recorded by their launch)."""
        with reader_factory(self.app)() as db:
            row = db.get(EventRow, event_id)
            if row is None or row.state != PENDING:  # done, or gone with its project
                return []
            event = row.to_event()
            recorded = _recorded(db, event_id)
        done = [
            deliver(d, event, partial(launch_wrapper, event_id=event_id,
                                      subscription_id=d.subscription.id))
            for d in plan(self.active(), event)
            if d.subscription.id not in recorded
        ]  # fmt: skip
        with session_factory(self.app)() as db:
            row = db.get(EventRow, event_id)
            if row is None:  # its project was deleted meanwhile: no history in a new one
                return done
            recorded = _recorded(db, event_id)
            db.add_all(
                _delivery_row(d, event, event_id) for d in done
                if d.subscription.id not in recorded
            )  # fmt: skip
            row.state, row.delivered = DELIVERED, utcnow()
            db.commit()
        return done


def _recorded(db: Session, event_id: int) -> set[int | None]:
    """The subscriptions that already have their delivery of the event."""
    query = select(DeliveryRow.subscription_id).where(DeliveryRow.event_id == event_id)
    return set(db.scalars(query))


def _retire_project_events(app: Flask, *, project: Project, db: Session, **_extra: Any):
    """`project_deleting`: its events and deliveries go, and so do subscriptions naming only it
    (one that also names other projects keeps those; it never becomes site-wide), in the same
    commit. Its events not yet delivered go with it: they name objects that are gone."""
    db.execute(delete(DeliveryRow).where(DeliveryRow.project == project.id))
    db.execute(delete(EventRow).where(EventRow.project == project.id))
    for row in db.scalars(select(SubscriptionRow)).all():
        if project.id not in row.project_ids:
            continue
        others = [p for p in row.project_ids if p != project.id]
        if others:
            row.event_filter = {**row.event_filter, "project-ids": others}
        else:
            db.delete(row)
    worker = event_service.get(app)
    return worker.invalidate


def _on_object_created(
    app: Flask,
    *,
    kind: str,
    xsi_type: str | None,
    project: str | None,
    uri: str,
    payload: dict,
    db: Session,
    **_extra: Any,
) -> None:
    """signals.object_created receiver: store the event in the creating transaction (the
    outbox), and queue it once that commits."""
    if not app.config["EVENT_SERVICE_ENABLED"]:
        return
    kind_of_event = event_type_for(kind, xsi_type)
    worker = event_service.get(app)
    if kind_of_event is None or not worker.wants(kind_of_event.id, db):
        return
    user = auth.current_user() if has_request_context() else None
    if kind != "resource" and user is not None:
        payload = dict(payload, resources=_resources_of(uri))
    row = EventRow(
        type=kind_of_event.id,
        status="CREATED",
        project=project,
        payload=xnat_payload(payload, uri),
        user=user.username if user is not None else None,
    )
    db.add(row)

    def stored() -> None:
        fault_point("event-stored")
        worker.submit(row.id)

    signals.after_commit(db, stored)


def _recorder(event_id: int, subscription_id: int):
    """What a launch for this delivery adds to the job's transaction: its delivery record,
    unique per (event, subscription), so an event redelivered after a restart launches nothing
    twice (a second launch is refused, 409)."""

    def record(job, db: Session) -> None:
        if subscription_id in _recorded(db, event_id):
            raise Conflict(
                f"Event {event_id}: subscription {subscription_id} has already been delivered."
            )
        row, sub = db.get(EventRow, event_id), db.get(SubscriptionRow, subscription_id)
        if row is None or sub is None:
            raise Conflict(
                f"Event {event_id}: it or subscription {subscription_id} no longer exists."
            )
        subscription = sub.to_subscription()
        delivery = Delivery(subscription=subscription, match=Match.MATCHED, user=job.username,
                            project=job.project, inputs=dict(subscription.attributes),
                            container_id=str(job.id))  # fmt: skip
        db.add(_delivery_row(delivery, row.to_event(), event_id))

    return record


def _resources_of(uri: str) -> list[dict]:
    """The object's resources as XNAT's event model lists them (filters test their labels)."""
    try:
        obj = resolve_object(uri, access=None)
    except HTTPException:
        return []
    return [
        {
            "id": str(r.pk),
            "integer-id": r.pk,
            "label": r.label,
            "xsiType": r.xsi_type,
            "uri": r.uri,
            "format": r.format,
            "content": r.content,
        }
        for r in obj.resources
    ]


def xnat_payload(payload: dict, uri: str) -> dict:
    """The event object as XNAT's event service serialises it (assessor fields under `props`)."""
    shaped = dict(payload)
    shaped.setdefault("uri", uri)
    fields = payload.get("fields")
    if isinstance(fields, dict):
        shaped.setdefault(
            "props",
            {
                str(k).lower(): v
                for k, v in fields.items()
                if isinstance(v, str | int | float | bool)
            },
        )
    return shaped


def launch_wrapper(
    project: str | None,
    wrapper_id: int,
    uri: str,
    attributes: dict[str, str],
    username: str,
    *,
    event_id: int,
    subscription_id: int,
) -> str:
    """Launch wrapper `wrapper_id` on `uri` as `username`, in process, with the checks the
    launch API gives a request of theirs (launches.py), recording the delivery with the job.
    Returns the container id; XnatMlError when refused; Postponed when the store was busy
    (nothing committed: asking again is safe)."""
    db = get_db()
    try:
        user = db.scalar(select(User).where(User.username == username))
        if user is None or not user.enabled:
            raise XnatMlError(f"user {username}: does not exist or is disabled")
        if not project:
            raise XnatMlError(f"event on {uri}: no project to launch in")
        with auth.acting_as(user):
            job = launch_on(project, wrapper_id, uri, attributes,
                            _recorder(event_id, subscription_id))  # fmt: skip
        return str(job.id)
    except HTTPException as exc:
        message = f"wrapper {wrapper_id} on {uri}: launch refused ({exc.description})"
        raise XnatMlError(message) from None
    except OperationalError as exc:
        raise Postponed(f"the store was busy ({exc.orig})") from None
    finally:
        db.rollback()  # whatever was left open: end it, a worker thread holds no lock


def _delivery_row(delivery: Delivery, event: Event, event_id: int) -> DeliveryRow:
    payload = event.payload
    row = DeliveryRow(
        event_id=event_id,
        subscription_id=delivery.subscription.id,
        subscription=delivery.subscription.to_json(),
        event_type=event.type,
        event_status=event.status,
        project=event.project,
        user=delivery.user,
        object_uri=payload.get("uri"),
        object_label=payload.get("label"),
        object_xsi_type=payload.get("xsiType"),
        inputs=delivery.inputs,
        container_id=delivery.container_id,
        filter_mismatch=delivery.match is Match.FILTER_MISMATCH,
        error=delivery.error is not None,
    )
    row.add_status("SUBSCRIPTION_TRIGGERED", "Subscription Service process started.")
    if delivery.match is Match.FILTER_MISMATCH:
        row.add_status("OBJECT_FILTER_MISMATCH_HALT", "Event object failed filter test.")
    elif delivery.error is not None:
        row.add_status("ACTION_FAILED", delivery.error)
    else:
        row.add_status("ACTION_CALLED", f"Container queued: {delivery.container_id}")
    return row
