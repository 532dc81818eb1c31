"""XNAT workflow entries over REST: the ones the Container Service opens for its jobs.

Served where XNAT serves them: `GET /xapi/workflows/{id}`; `GET`/`PUT /data/workflows/{id}`
(XNAT's WorkflowResource: a PUT's query fields change the entry, which is how a job reports its
step and percentage); `GET /data/services/workflows[/{pipeline}]` (XNAT's WorkflowsRestlet) and
an object's `.../workflows` listing. Reading needs read access to the workflow's project now
(else 404, as for jobs); changing one needs edit rights there and, as in XNAT, to have made it
(its launcher, whose job token acts as them) or to be a site admin (403 otherwise).
"""

from __future__ import annotations

from xml.etree import ElementTree

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import or_, select
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from xnat_ml.containers.workflows import EDITABLE, MAX_FIELD, Workflow
from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.routing import archive_route
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import Project
from xnat_ml.server.store.objects import resolve_object

bp = Blueprint("workflows", __name__)

PREFIX = "wrk:workflowdata/"
LISTING_COLUMNS = (
    "wrk_workflowdata_id", "id", "scan_id", "externalid", "data_type", "pipeline_name",
    "launch_time", "jobid", "status", "step_description", "percentagecomplete",
    "current_step_id", "current_step_launch_time", "create_user",
)  # fmt: skip
NAMESPACE = "http://nrg.wustl.edu/workflow"


def _readable(workflow: Workflow, access: str = "read") -> bool:
    user = auth.require_login()
    project = get_db().scalar(select(Project).where(Project.id == workflow.project))
    return project is not None and auth.may(user, project, access)


def _workflow(workflow_id: str) -> Workflow:
    """The workflow if the caller may read its project now; 404 otherwise (ids are numbers)."""
    found = get_db().get(Workflow, int(workflow_id)) if workflow_id.isdigit() else None
    if found is None or not _readable(found):
        raise NotFound(f"Workflow {workflow_id} does not exist.")
    return found


@bp.get("/xapi/workflows/<workflow_id>")
def get_workflow_json(workflow_id: str) -> Response:
    return jsonify(_workflow(workflow_id).to_json())


@bp.get("/data/workflows/<workflow_id>")
def get_workflow(workflow_id: str) -> Response:
    """XNAT's item: XML by default (`format=json`: the `items` shape of any archive object)."""
    workflow = _workflow(workflow_id)
    if (request.args.get("format") or "xml").lower() == "json":
        meta = {"xsi:type": "wrk:workflowData", "isHistory": False}
        item = {"data_fields": workflow.fields(), "meta": meta, "children": []}
        return jsonify({"items": [item]})
    root = ElementTree.Element("wrk:Workflow", {"xmlns:wrk": NAMESPACE})
    for key, value in workflow.fields().items():
        if value not in ("", None):
            root.set(key, str(value))
    body = ElementTree.tostring(root, encoding="unicode", xml_declaration=True)
    return Response(body, 200, mimetype="text/xml")


@bp.put("/data/workflows/<workflow_id>")
def update_workflow(workflow_id: str) -> Response:
    """Change the fields in the query (`status`, `step_description`, `percentageComplete`,
    `current_step_id`, `details`, `comments`, with or without `wrk:workflowData/`)."""
    found = get_db().get(Workflow, int(workflow_id)) if workflow_id.isdigit() else None
    if found is None:
        raise NotFound(f"Workflow {workflow_id} does not exist.")
    user = auth.require_login()
    if not _readable(found, "edit") or (
        found.create_user != user.username and not auth.is_admin(user)
    ):
        raise Forbidden(
            f"Workflow {workflow_id}: you are not allowed to make changes to it "
            "(its launcher or a site admin, with edit rights in its project)."
        )
    changes = _changes()
    for attribute, value in changes.items():
        setattr(found, attribute, value)
    get_db().commit()
    return Response(str(found.id), 200, mimetype="text/plain")


def _changes() -> dict[str, str]:
    """The query's workflow fields as attribute -> value (400 naming a field it may not set)."""
    changes = {}
    for key, value in request.args.items():
        name = key.lower().removeprefix(PREFIX)
        if name in ("format", "event_reason", "event_type", "event_action", "event_comment"):
            continue  # XNAT's request options, no fields
        if name not in EDITABLE:
            allowed = ", ".join(sorted(EDITABLE))
            raise BadRequest(f"Workflow field {key!r}: may not be set (settable: {allowed}).")
        if len(value) > MAX_FIELD or any(ord(c) < 32 and c not in "\t\n" for c in value):
            raise BadRequest(
                f"Workflow field {key!r}: longer than {MAX_FIELD} characters or holds a "
                "control character."
            )
        if name == "percentagecomplete" and value:
            try:
                number = float(value)
            except ValueError:
                number = -1.0
            if not 0 <= number <= 100:
                raise BadRequest(f"Workflow field {key!r}: {value!r} is no number from 0 to 100.")
        changes[EDITABLE[name]] = value
    if not changes:
        raise BadRequest("Workflow update: no field given (e.g. step_description=...).")
    return changes


# ------------------------------------------------------------------------------- listings


def _row(workflow: Workflow) -> dict:
    fields = {key.lower(): value for key, value in workflow.fields().items()}
    return {**{column: fields.get(column, "") for column in LISTING_COLUMNS},
            "URI": f"/data/workflows/{workflow.id}"}  # fmt: skip


def _listing(query, latest: bool) -> Response:
    """Rows of the workflows the caller may read, newest first; `latest`: one per object and
    pipeline (XNAT's display=LATEST)."""
    user = auth.require_login()
    rows, seen = [], set()
    readable = None if auth.is_admin(user) else set(
        get_db().scalars(select(Project.id).where(
            Project.pk.in_(auth.readable_project_pks(user) or [])))
    )  # fmt: skip
    for workflow in get_db().scalars(query.order_by(Workflow.id.desc())):
        if readable is not None and workflow.project not in readable:
            continue
        key = (workflow.object_id, workflow.scan_id, workflow.pipeline_name)
        if latest and key in seen:
            continue
        seen.add(key)
        rows.append(_row(workflow))
    args = {k: v for k, v in request.args.items()
            if k.lower() in ("format", "limit", "offset", "columns")}  # fmt: skip
    return result_set(rows, args, LISTING_COLUMNS)


@bp.get("/data/services/workflows")
@bp.get("/data/services/workflows/<pipeline>")
def services_workflows(pipeline: str | None = None) -> Response:
    """XNAT's WorkflowsRestlet: by pipeline names (comma-separated, matched as substrings),
    `experiment=ID`, `project=P`, `status=S`; `display=ALL` for every entry, else the latest
    per object."""
    query = select(Workflow)
    if pipeline:
        names = [n.strip() for n in pipeline.split(",") if n.strip()]
        query = query.where(or_(*(Workflow.pipeline_name.contains(n) for n in names)))
    if request.args.get("project"):
        auth.require_project_role(request.args["project"], "read")
        query = query.where(Workflow.project == request.args["project"])
    if request.args.get("experiment"):
        query = query.where(Workflow.object_id == request.args["experiment"])
    if request.args.get("status"):
        query = query.where(Workflow.status == request.args["status"])
    latest = (request.args.get("display") or "LATEST").upper() != "ALL"
    return _listing(query, latest)


@archive_route(bp, "/<xnat:owner>/workflows", methods=["GET"])
def object_workflows(owner: str) -> Response:
    """Every workflow of one object (a session's include those of its scans; a scan's only its
    own), newest first."""
    obj = resolve_object(owner, "read")
    if obj.kind == "scan":
        query = select(Workflow).where(
            Workflow.object_id == obj.experiment.id, Workflow.scan_id == obj.id
        )
    else:
        query = select(Workflow).where(Workflow.object_id == obj.id)
    return _listing(query.where(Workflow.project == obj.project_obj.id), latest=False)
