"""The Event Service REST API (`/xapi/events/...`) and the dispatcher behind it.

Routes and answers follow xnat-web's EventServiceRestApi: site-level routes are for site admins,
`/xapi/projects/{p}/events/...` for the project's owners; creation answers 201 with
`name:id`; a subscription that does not validate answers 424 "Subscription format failed to
validate." with the field and problem on the next line.

Identity: a subscription's actions run as its owner, so whoever edits a subscription becomes its
owner (XNAT keeps the creator, which let a project owner's attributes run as a site admin), and a
subscription that names projects never acts as the event's user, whatever the route.

Creation of archive objects arrives through `signals.object_created` inside the creating
transaction; when a subscription wants its type, the receiver stores the event (and who caused
it) in the outbox in that transaction, and queues it once committed. One worker thread per app
matches queued events against the active subscriptions and launches their wrappers, so a slow or
failing launch never delays or fails the request that created the object. Delivery is at least
once and launches at most once: events still pending when the server stops are delivered after
the restart (`server_ready`), and each launch records its delivery in the job's own transaction
under a unique (event, subscription), so a redelivered event skips what it already launched.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import secrets
import threading
import time
from contextlib import nullcontext
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import quote

import requests
from flask import Blueprint, Flask, Response, current_app, has_request_context, jsonify, request
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Conflict, Forbidden, HTTPException, NotFound

from xnat_ml.containers import registry
from xnat_ml.errors import XnatMlError
from xnat_ml.events import (
    EVENT_TYPES,
    Event,
    Match,
    Subscription,
    SubscriptionError,
    event_type,
    event_type_for,
    parse_subscription,
)
from xnat_ml.events.dispatch import Delivery, Postponed, deliver, plan
from xnat_ml.events.filters import FilterError, compile_predicate, normalise_predicate
from xnat_ml.server import auth, signals
from xnat_ml.server.archive import resolve_object
from xnat_ml.server.db import get_db, reader_factory, session_factory
from xnat_ml.server.event_store import DELIVERED, PENDING, DeliveryRow, EventRow, SubscriptionRow
from xnat_ml.server.faults import fault_point
from xnat_ml.server.models import Project, User, utcnow

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

MAX_BODY = 1 << 20  # a subscription is a few hundred bytes; refuse megabytes of JSON
CLAIM_HEADER = "X-XNAT-ML-Delivery"  # event:subscription:signature on the worker's launches
RETRY_MAX_S = 30.0  # longest pause between attempts at an event the server could not take


@bp.record_once
def _set_up(state) -> None:
    app = state.app
    app.config.setdefault("EVENT_SERVICE_ENABLED", True)
    worker = app.extensions["xnat_ml.events"] = EventWorker(app)
    signals.object_created.connect(_on_object_created, sender=app)
    signals.job_creating.connect(_record_launch, sender=app)
    signals.project_deleting.connect(_retire_project_events, sender=app)
    signals.server_ready.connect(worker.resume, sender=app, weak=False)


# ----------------------------------------------------------------------------- dispatch


class EventWorker:
    """One daemon thread per app that delivers stored events (outbox ids), in order.

    Active subscriptions are cached between changes (the REST handlers call `invalidate`), so
    the many events nobody subscribed to cost no database access. An event whose launch cannot
    reach the server is tried again, with growing pauses, until it can.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.queue: queue.Queue[int] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active: list[Subscription] | None = None
        self._generation = 0
        self._key = secrets.token_bytes(32)  # signs launches this worker asks for

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

    def claim(self, event_id: int, subscription_id: int) -> str:
        """The header value that lets a launch record this delivery (`_record_launch`)."""
        ids = f"{event_id}:{subscription_id}"
        return f"{ids}:{hmac.new(self._key, ids.encode(), 'sha256').hexdigest()}"

    def verify(self, claim: str) -> tuple[int, int] | None:
        ids, _sep, mac = claim.rpartition(":")
        expected = hmac.new(self._key, ids.encode(), "sha256").hexdigest()
        event_id, _sep, sub_id = ids.partition(":")
        if not hmac.compare_digest(mac, expected) or not (event_id + sub_id).isdigit():
            return None
        return int(event_id), int(sub_id)

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
            event, site_url = row.to_event(), row.site_url
            recorded = _recorded(db, event_id)
        done = [
            deliver(d, event, partial(launch_wrapper, site_url,
                                      claim=self.claim(event_id, d.subscription.id)))
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
    worker: EventWorker = app.extensions["xnat_ml.events"]
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
    if not app.config.get("EVENT_SERVICE_ENABLED", True):
        return
    kind_of_event = event_type_for(kind, xsi_type)
    worker: EventWorker = app.extensions["xnat_ml.events"]
    if kind_of_event is None or not worker.wants(kind_of_event.id, db):
        return
    in_request = has_request_context()
    user = auth.current_user() if in_request else None
    if kind != "resource" and user is not None:
        payload = dict(payload, resources=_resources_of(uri))
    row = EventRow(
        type=kind_of_event.id,
        status="CREATED",
        project=project,
        payload=xnat_payload(payload, uri),
        user=user.username if user is not None else None,
        site_url=app.config.get("SITE_URL") or (request.host_url if in_request else ""),
    )
    db.add(row)

    def stored() -> None:
        fault_point("event-stored")
        worker.submit(row.id)

    signals.after_commit(db, stored)


def _record_launch(app: Flask, *, job, db: Session, **_extra: Any) -> None:
    """signals.job_creating receiver: a launch the Event Service asked for (its claim header)
    records its delivery in the job's transaction; a second launch for the same event and
    subscription is refused (409), so an event redelivered after a restart launches nothing
    twice."""
    claim = request.headers.get(CLAIM_HEADER) if has_request_context() else None
    if claim is None:
        return
    worker: EventWorker = app.extensions["xnat_ml.events"]
    ids = worker.verify(claim)
    if ids is None:
        raise Forbidden(f"{CLAIM_HEADER}: not a delivery this server's Event Service asked for.")
    event_id, sub_id = ids
    if sub_id in _recorded(db, event_id):
        raise Conflict(f"Event {event_id}: subscription {sub_id} has already been delivered.")
    row, sub = db.get(EventRow, event_id), db.get(SubscriptionRow, sub_id)
    if row is None or sub is None:
        raise Conflict(f"Event {event_id}: it or subscription {sub_id} no longer exists.")
    subscription = sub.to_subscription()
    delivery = Delivery(subscription=subscription, match=Match.MATCHED, user=job.username,
                        project=job.project, inputs=dict(subscription.attributes),
                        container_id=str(job.id))  # fmt: skip
    db.add(_delivery_row(delivery, row.to_event(), event_id))


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
    site_url: str,
    project: str | None,
    wrapper_id: int,
    uri: str,
    attributes: dict[str, str],
    username: str,
    *,
    claim: str,
) -> str:
    """Launch wrapper `wrapper_id` on `uri` as `username` through the server's own launch API.

    Going through `POST /xapi/projects/{p}/wrappers/{id}/root/{input}/launch` (with an alias
    token of the user) applies exactly the checks a user's launch gets: edit rights, wrapper
    enabled in the project, inputs. The root input is the wrapper's first external input, as in
    XNAT's CommandActionProvider. `claim` (`EventWorker.claim`) makes the launch record its
    delivery with the job. Returns the container id; raises Postponed when the server could not
    be asked (nor answered: the claim makes asking again safe).
    """
    db = get_db()
    try:
        user = db.scalar(select(User).where(User.username == username))
        if user is None or not user.enabled:
            raise XnatMlError(f"user {username}: does not exist or is disabled")
        if not project:
            raise XnatMlError(f"event on {uri}: no project to launch in")
        found = registry.find_wrapper(db, wrapper_id)
        if found is None:
            raise XnatMlError(f"wrapper {wrapper_id}: not installed on this server")
        _command, wrapper = found
        if not wrapper.external_inputs:
            raise XnatMlError(f"wrapper {wrapper.name}: has no external input to launch on")
        root = wrapper.external_inputs[0].name
    finally:
        # Outside a request every transaction of the store begins IMMEDIATE (a write lock):
        # end it before the launch request below needs the lock.
        db.rollback()
    token, secret = auth.issue_token(user)  # only for this request: revoked below
    url = (
        f"{site_url.rstrip('/')}/xapi/projects/{quote(project, safe='')}/wrappers/{wrapper_id}"
        f"/root/{quote(root, safe='')}/launch"
    )
    try:
        response = requests.post(
            url, json={**attributes, root: uri}, auth=(token.alias, secret),
            headers={CLAIM_HEADER: claim}, timeout=120,
        )  # fmt: skip
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise Postponed(f"{url} did not answer ({type(exc).__name__})") from None
    except requests.RequestException as exc:
        raise XnatMlError(f"wrapper {wrapper.name}: launch request failed ({exc})") from None
    finally:
        auth.revoke_token(token.alias)
        db.commit()
    try:
        report = response.json()
    except ValueError:
        report = {"message": response.text.strip()[:300]}
    if response.status_code != 200 or report.get("status") != "success":
        message = report.get("message") if isinstance(report, dict) else None
        raise XnatMlError(
            f"wrapper {wrapper.name} on {uri}: launch refused "
            f"(HTTP {response.status_code}: {message or response.text.strip()[:300]})"
        )
    return str(report.get("id"))


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


# ----------------------------------------------------------------------------- helpers


def _invalid(message: str) -> Response:
    return Response(
        f"Subscription format failed to validate.\n{message}\n", 424, mimetype="text/plain"
    )


def _body() -> Any:
    raw = request.get_data(cache=False)
    if len(raw) > MAX_BODY:
        raise BadRequest(f"Subscription: the body is larger than {MAX_BODY} bytes.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequest(f"Subscription: the body is not JSON ({str(exc)[:120]}).") from None


def _row(sub_id: int) -> SubscriptionRow:
    row = get_db().get(SubscriptionRow, sub_id)
    if row is None:
        raise NotFound(f"Subscription {sub_id} does not exist.")
    return row


def _check_owner(user, project_ids: list[str] | tuple[str, ...], project: str) -> None:
    """XNAT's rule: a project subscription names `project`, and the caller owns all it names."""
    if not project_ids or project not in project_ids:
        raise Forbidden(
            f"User '{user.username}' may not manage subscriptions for project(s): "
            f"{', '.join(project_ids) or 'Site'} from project '{project}'."
        )
    db = get_db()
    for pid in project_ids:
        found = db.scalar(select(Project).where(Project.id == pid))
        if found is None or not auth.may(user, found, "own"):
            raise Forbidden(f"User '{user.username}' does not own project '{pid}'.")


def _save(row: SubscriptionRow, sub: Subscription) -> Response | None:
    """Validate what only the server knows (the wrapper exists and is enabled in the projects,
    the name is unique, as XNAT checks), then write; a 424 answer on failure. A subscription
    naming projects is stored with act-as-event-user off: project owners can edit it, and what
    they choose must never run as whoever caused the event (a site admin, say)."""
    if sub.event_filter.project_ids:
        sub = replace(sub, act_as_event_user=False)
    db = get_db()
    found = registry.find_wrapper(db, sub.wrapper_id)
    if found is None:
        return _invalid(
            f"subscription field 'action-key': wrapper {sub.wrapper_id} is not installed "
            "(GET /xapi/commands lists the wrappers and their ids)"
        )
    for project in sub.event_filter.project_ids:
        if not registry.is_enabled(db, project, sub.wrapper_id):
            return _invalid(
                f"subscription field 'action-key': wrapper {found[1].name!r} is not enabled in "
                f"project {project!r}"
            )
    clash = db.scalar(
        select(SubscriptionRow.id).where(
            SubscriptionRow.name == sub.name, SubscriptionRow.id != (row.id or -1)
        )
    )
    if clash is not None:
        return _invalid(
            f"subscription field 'name': a subscription named {sub.name!r} exists (id {clash})"
        )
    row.update_from(sub)
    db.add(row)
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        return _invalid(f"subscription field 'name': a subscription named {sub.name!r} exists")
    _worker().invalidate()
    return None


def _create(owner: str, project: str | None) -> Response:
    try:
        sub = parse_subscription(_body())
    except SubscriptionError as exc:
        return _invalid(str(exc))
    if project is not None:
        user = auth.current_user()
        ids = sub.event_filter.project_ids or (project,)
        _check_owner(user, ids, project)
        sub = replace(sub, event_filter=replace(sub.event_filter, project_ids=tuple(ids)))
    row = SubscriptionRow(owner=owner)
    failed = _save(row, sub)
    if failed is not None:
        return failed
    return Response(f"{row.name}:{row.id}", 201, mimetype="text/plain")


def _update(row: SubscriptionRow, project: str | None) -> Response:
    """Apply a (partial) update; the editor becomes the owner, so the edited action runs as
    the one who chose it."""
    try:
        sub = parse_subscription(_body(), base=row.to_subscription())
    except SubscriptionError as exc:
        return _invalid(str(exc))
    editor = auth.require_login()
    if project is not None:
        _check_owner(editor, sub.event_filter.project_ids, project)
    row.owner = editor.username
    failed = _save(row, sub)
    return failed or Response(status=200)


def _set_active(row: SubscriptionRow, active: bool) -> Response:
    row.active = active
    get_db().commit()
    _worker().invalidate()
    return Response(status=200)


def _delete(row: SubscriptionRow) -> Response:
    get_db().delete(row)
    get_db().commit()
    _worker().invalidate()
    return Response(status=204)


def _worker() -> EventWorker:
    return current_app.extensions["xnat_ml.events"]


def _deliveries(project: str | None, one: int | None = None, count: bool = False) -> Response:
    db = get_db()
    query = select(DeliveryRow).order_by(DeliveryRow.id.desc())
    if project is not None:
        query = query.where(DeliveryRow.project == project)
    if one is not None:
        row = db.scalar(query.where(DeliveryRow.id == one))
        if row is None:
            raise NotFound(f"Delivery {one} does not exist.")
        return jsonify(row.to_json())
    if sub_id := request.args.get("subscription-id", type=int):
        query = query.where(DeliveryRow.subscription_id == sub_id)
    if request.args.get("include-filter-mismatch", "false").lower() != "true":
        query = query.where(DeliveryRow.filter_mismatch.is_(False))
    if count:
        return jsonify(db.scalar(select(func.count()).select_from(query.subquery())))
    limit = max(1, min(request.args.get("limit", 1000, type=int), 10000))
    return jsonify([row.to_json() for row in db.scalars(query.limit(limit))])


def _display(row: SubscriptionRow, project: str) -> dict:
    data = row.to_subscription().to_json()
    data["editable"] = row.project_ids == [project]
    return data


# ----------------------------------------------------------------------------- site routes


@bp.route("/xapi/events/subscription", methods=["POST"])
def create_subscription() -> Response:
    return _create(auth.require_admin().username, project=None)


@bp.route("/xapi/events/subscriptions", methods=["GET"])
def list_subscriptions() -> Response:
    auth.require_admin()
    rows = get_db().scalars(select(SubscriptionRow).order_by(SubscriptionRow.id))
    return jsonify([row.to_subscription().to_json() for row in rows])


@bp.route("/xapi/events/subscription/<int:sub_id>", methods=["GET", "PUT", "DELETE"])
def one_subscription(sub_id: int) -> Response:
    auth.require_admin()
    row = _row(sub_id)
    if request.method == "PUT":
        return _update(row, project=None)
    if request.method == "DELETE":
        return _delete(row)
    return jsonify(row.to_subscription().to_json())


@bp.route(
    "/xapi/events/subscription/<int:sub_id>/<any(activate, deactivate):verb>", methods=["POST"]
)
def activate_subscription(sub_id: int, verb: str) -> Response:
    auth.require_admin()
    return _set_active(_row(sub_id), verb == "activate")


@bp.route("/xapi/events/subscription/filter/validate", methods=["POST"])
def validate_filter() -> Response:
    auth.require_login()
    predicate = normalise_predicate(request.get_data(as_text=True)[:MAX_BODY])
    try:
        compile_predicate(predicate)
    except FilterError as exc:
        return Response(f"JsonPath format failed to validate.\n{exc}\n", 424, mimetype="text/plain")
    return Response(status=200)


@bp.route("/xapi/events/delivered", methods=["GET", "POST"])
def delivered() -> Response:
    auth.require_admin()
    return _deliveries(request.args.get("project"))


@bp.route("/xapi/events/delivered/count", methods=["GET"])
def delivered_count() -> Response:
    auth.require_admin()
    return _deliveries(request.args.get("project"), count=True)


@bp.route("/xapi/events/delivered/<int:delivery_id>", methods=["GET"])
def one_delivery(delivery_id: int) -> Response:
    auth.require_admin()
    return _deliveries(None, one=delivery_id)


@bp.route("/xapi/events/events", methods=["GET"])
@bp.route("/xapi/projects/<project>/events/events", methods=["GET"])
def list_events(project: str | None = None) -> Response:
    auth.require_login()
    return jsonify([t.to_json() for t in sorted(EVENT_TYPES.values(), key=lambda t: t.id)])


@bp.route("/xapi/events/event", methods=["GET"])
def one_event() -> Response:
    auth.require_login()
    found = event_type(request.args.get("event-type", ""))
    if found is None:
        raise NotFound(f"Event type '{request.args.get('event-type', '')}' does not exist.")
    return jsonify(found.to_json())


@bp.route("/xapi/events/prefs", methods=["GET", "PUT"])
def prefs() -> Response:
    if request.method == "PUT":
        auth.require_admin()
        body = _body()
        if not isinstance(body, dict) or not isinstance(body.get("enabled", True), bool):
            raise BadRequest('Event Service prefs: expected {"enabled": true|false}.')
        current_app.config["EVENT_SERVICE_ENABLED"] = body.get("enabled", True)
        return Response(status=200)
    auth.require_login()
    return jsonify({"enabled": current_app.config.get("EVENT_SERVICE_ENABLED", True)})


# ----------------------------------------------------------------------------- project routes


@bp.route("/xapi/projects/<project>/events/subscription", methods=["POST"])
def create_project_subscription(project: str) -> Response:
    user = auth.require_project_role(project, "own")
    return _create(user.username, project=project)


@bp.route("/xapi/projects/<project>/events/subscriptions", methods=["GET"])
def list_project_subscriptions(project: str) -> Response:
    auth.require_project_role(project, "own")
    rows = get_db().scalars(select(SubscriptionRow).order_by(SubscriptionRow.id))
    return jsonify(
        [_display(r, project) for r in rows if not r.project_ids or project in r.project_ids]
    )


@bp.route(
    "/xapi/projects/<project>/events/subscription/<int:sub_id>", methods=["GET", "PUT", "DELETE"]
)
def one_project_subscription(project: str, sub_id: int) -> Response:
    user = auth.require_project_role(project, "own")
    row = _row(sub_id)
    if request.method == "GET":
        if row.project_ids and project not in row.project_ids:
            raise Forbidden(f"User '{user.username}' may not read subscriptions of other projects.")
        return jsonify(_display(row, project))
    _check_owner(user, row.project_ids, project)
    if request.method == "PUT":
        return _update(row, project=project)
    return _delete(row)


@bp.route(
    "/xapi/projects/<project>/events/subscription/<int:sub_id>/<any(activate, deactivate):verb>",
    methods=["POST"],
)
def activate_project_subscription(project: str, sub_id: int, verb: str) -> Response:
    user = auth.require_project_role(project, "own")
    row = _row(sub_id)
    _check_owner(user, row.project_ids, project)
    return _set_active(row, verb == "activate")


@bp.route("/xapi/projects/<project>/events/delivered", methods=["GET", "POST"])
def project_delivered(project: str) -> Response:
    auth.require_project_role(project, "own")
    return _deliveries(project)


@bp.route("/xapi/projects/<project>/events/delivered/<int:delivery_id>", methods=["GET"])
def one_project_delivery(project: str, delivery_id: int) -> Response:
    auth.require_project_role(project, "own")
    return _deliveries(project, one=delivery_id)
