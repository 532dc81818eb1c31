"""The Event Service REST API (`/xapi/events/...`): subscriptions, deliveries, prefs.

Routes and answers follow xnat-web's EventServiceRestApi: site-level routes are for site admins,
`/xapi/projects/{p}/events/...` for the project's owners; creation answers 201 with
`name:id`; a subscription that does not validate answers 424 "Subscription format failed to
validate." with the field and problem on the next line.

Identity: a subscription's actions run as its owner, so whoever edits a subscription becomes its
owner (XNAT keeps the creator, which let a project owner's attributes run as a site admin), and a
subscription that names projects never acts as the event's user, whatever the route.

Subscriptions are stored here; delivering events to them is the worker's (event_worker.py),
which every change of a subscription tells to forget its cached list.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from xnat_ml.containers import registry
from xnat_ml.events import (
    EVENT_TYPES,
    Subscription,
    SubscriptionError,
    event_type,
    parse_subscription,
)
from xnat_ml.events.filters import FilterError, compile_predicate, normalise_predicate
from xnat_ml.server import auth
from xnat_ml.server.event_worker import event_service
from xnat_ml.server.formats.json_body import bounded_body, json_body
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.event_store import DeliveryRow, SubscriptionRow
from xnat_ml.server.store.models import Project

log = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

MAX_BODY = 1 << 20  # a subscription is a few hundred bytes; refuse megabytes of JSON


# ----------------------------------------------------------------------------- helpers


def _invalid(message: str) -> Response:
    return Response(
        f"Subscription format failed to validate.\n{message}\n", 424, mimetype="text/plain"
    )


def _body() -> Any:
    return json_body("Subscription body", max_bytes=MAX_BODY)


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
    event_service.get().invalidate()
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
    event_service.get().invalidate()
    return Response(status=200)


def _delete(row: SubscriptionRow) -> Response:
    get_db().delete(row)
    get_db().commit()
    event_service.get().invalidate()
    return Response(status=204)


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
    raw = bounded_body("Filter", MAX_BODY)  # any user may call this: never read more
    predicate = normalise_predicate(raw.decode("utf-8", "replace"))
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
    return jsonify({"enabled": current_app.config["EVENT_SERVICE_ENABLED"]})


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
