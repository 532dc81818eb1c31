"""Sharing subjects and experiments into other projects (XNAT's `.../projects/{p}` routes).

`PUT <subject or experiment>/projects/{p}[?label=L]` shares the object into project p, where it
is then listed and readable by p's readers under label L (default: its own label);
`DELETE` of the same path unshares it; `GET <object>/projects` lists the owning project and the
projects it is shared into. As XNAT requires, sharing needs read access to the object and the
Owner role in the project shared into; unsharing the Owner role in either project. Sharing a
subject shares the subject alone, not its experiments (share each one as well).
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from xnat_ml.server import auth
from xnat_ml.server.formats.listing import result_set
from xnat_ml.server.formats.validation import check_label
from xnat_ml.server.routing import archive_route
from xnat_ml.server.store import shares
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import Experiment, Project, Subject
from xnat_ml.server.store.objects import resolve_object

bp = Blueprint("sharing", __name__)


def _shareable(path: str) -> Subject | Experiment:
    obj = resolve_object(path, "read")
    if not isinstance(obj, Subject | Experiment):
        raise BadRequest(f"Only subjects and experiments are shared; {path!r} is a {obj.kind}.")
    return obj


def _project(project_id: str) -> Project:
    auth.require_project_role(project_id, "read")  # 404 if absent, 403 if not readable
    return get_db().query(Project).filter_by(id=project_id).one()


@archive_route(bp, "/<xnat:path>/projects/<project_id>", methods=["PUT"])
def share(path: str, project_id: str) -> Response:
    obj = _shareable(path)
    auth.refuse_job("share data into other projects")
    if request.args.get("primary", "").lower() == "true":
        raise BadRequest("Moving an object to another project (primary=true) is not supported.")
    target = _project(project_id)
    auth.require_project_role(target, "own")
    kind = obj.kind.title()
    if target is obj.project:
        raise Conflict(f"{kind} '{obj.label}' already belongs to project '{target.id}'.")
    db = get_db()
    if shares.share_of(db, target, obj) is not None:
        raise Conflict(f"{kind} '{obj.label}' is already shared into project '{target.id}'.")
    label = check_label(kind, request.args.get("label") or obj.label)
    if shares.label_taken(db, target, type(obj), label):
        raise Conflict(f"{kind} label '{label}' is already used in project '{target.id}'.")
    key = "subject_pk" if isinstance(obj, Subject) else "experiment_pk"
    db.add(shares.Share(project_pk=target.pk, label=label, **{key: obj.pk}))
    db.commit()
    return Response(obj.id, 200, mimetype="text/plain")


@archive_route(bp, "/<xnat:path>/projects/<project_id>", methods=["DELETE"])
def unshare(path: str, project_id: str) -> Response:
    obj = _shareable(path)
    target = _project(project_id)
    db = get_db()
    found = shares.share_of(db, target, obj)
    if found is None:
        raise NotFound(f"{obj.kind.title()} '{obj.label}' is not shared into '{target.id}'.")
    user = auth.require_login()
    if not (auth.may(user, target, "own") or auth.may(user, obj.project, "own")):
        auth.require_project_role(target, "own")  # the 403 names the role needed
    db.delete(found)
    db.commit()
    return Response("", 200)


@archive_route(bp, "/<xnat:path>/projects", methods=["GET"])
def sharing_projects(path: str) -> Response:
    obj = _shareable(path)
    db = get_db()
    owner = obj.project
    rows = []
    for project in [owner, *shares.sharing_projects(db, obj)]:
        share = shares.share_of(db, project, obj) if project is not owner else None
        rows.append({
            "ID": project.id, "Secondary_ID": project.secondary_id, "Name": project.name,
            "label": share.label if share else obj.label,
            "owner": "true" if project is owner else "false",
        })  # fmt: skip
    return result_set(rows, request.args)
