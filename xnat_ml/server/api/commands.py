"""`/xapi/commands`: install, list and remove Container Service commands; per-project enablement.

Shapes follow XNAT's Container Service REST API. The job runner behind the launches is the
`container_service` extension (container_service.py), started by `create_app`.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from xnat_ml.containers import registry, xsitypes
from xnat_ml.containers.command import MAX_COMMAND_BYTES, parse_command
from xnat_ml.containers.registry import CommandRecord
from xnat_ml.containers.validate import validate
from xnat_ml.server import auth
from xnat_ml.server.formats.json_body import bounded_body
from xnat_ml.server.store.db import get_db

bp = Blueprint("commands", __name__)


def _command_json(record: CommandRecord) -> dict:
    data = registry.with_ids(get_db(), record).to_dict()
    data["id"] = record.id
    return data


@bp.get("/xapi/commands")
def list_commands() -> Response:
    auth.require_login()
    query = select(CommandRecord).order_by(CommandRecord.id)
    for key, column in (("name", CommandRecord.name), ("version", CommandRecord.version),
                        ("image", CommandRecord.image)):  # fmt: skip
        if request.args.get(key):
            query = query.where(column == request.args[key])
    return jsonify([_command_json(r) for r in get_db().scalars(query)])


@bp.post("/xapi/commands")
def add_command() -> Response:
    auth.require_admin()
    command, problems = parse_command(bounded_body("Command", MAX_COMMAND_BYTES))
    if command is not None:
        problems += validate(command)
    errors = [str(p) for p in problems if not p.warning]
    if errors or command is None:
        raise BadRequest("Invalid command: " + "; ".join(errors[:20]))
    db = get_db()
    try:
        record = registry.install(db, command)
    except registry.XnatMlError as exc:
        raise Conflict(str(exc)) from None
    db.commit()
    return Response(str(record.id), 201, mimetype="application/json")


def _record(command_id: int) -> CommandRecord:
    record = get_db().get(CommandRecord, command_id)
    if record is None:
        raise NotFound(f"Command {command_id} does not exist.")
    return record


@bp.get("/xapi/commands/<int:command_id>")
def get_command(command_id: int) -> Response:
    auth.require_login()
    return jsonify(_command_json(_record(command_id)))


@bp.delete("/xapi/commands/<int:command_id>")
def delete_command(command_id: int) -> Response:
    auth.require_admin()
    db = get_db()
    db.delete(_record(command_id))
    db.commit()
    return Response(status=204)


@bp.get("/xapi/commands/available")
def available() -> Response:
    """Wrappers that can run on an object of `xsiType` in `project` (XNAT's launch menu)."""
    project = request.args.get("project")
    xsi_type = request.args.get("xsiType")
    if not project or not xsi_type:
        raise BadRequest("Query parameters project and xsiType are required.")
    auth.require_project_role(project, "read")
    db = get_db()
    out = []
    for record in db.scalars(select(CommandRecord).order_by(CommandRecord.id)):
        command = registry.with_ids(db, record)
        for wrapper in command.xnat:
            if not any(xsitypes.context_matches(c, xsi_type) for c in wrapper.contexts):
                continue
            kind = xsitypes.object_kind(xsi_type)
            root = next((i.name for i in wrapper.external_inputs if i.type == kind), None)
            out.append(
                {
                    "command-id": record.id,
                    "command-name": command.name,
                    "command-description": command.description,
                    "wrapper-id": wrapper.id,
                    "wrapper-name": wrapper.name,
                    "wrapper-description": wrapper.description,
                    "image-name": command.image,
                    "image-type": command.type,
                    "enabled": registry.is_enabled(db, project, wrapper.id),
                    "root-element-name": root,
                }
            )
    return jsonify(out)


def _wrapper_id(wrapper_id: int) -> int:
    if registry.find_wrapper(get_db(), wrapper_id) is None:
        raise NotFound(f"Wrapper {wrapper_id} does not exist.")
    return wrapper_id


@bp.get("/xapi/wrappers/<int:wrapper_id>/enabled")
def is_enabled_site(wrapper_id: int) -> Response:
    auth.require_login()
    return jsonify(registry.is_enabled(get_db(), registry.SITE, _wrapper_id(wrapper_id)))


@bp.put("/xapi/wrappers/<int:wrapper_id>/<state>")
def set_enabled_site(wrapper_id: int, state: str) -> Response:
    if state not in ("enabled", "disabled"):
        abort(404)
    auth.require_admin()
    db = get_db()
    registry.set_enabled(db, registry.SITE, _wrapper_id(wrapper_id), state == "enabled")
    db.commit()
    return Response(status=200)


@bp.get("/xapi/projects/<project>/wrappers/<int:wrapper_id>/enabled")
def is_enabled(project: str, wrapper_id: int) -> Response:
    auth.require_project_role(project, "read")
    return jsonify(registry.is_enabled(get_db(), project, _wrapper_id(wrapper_id)))


@bp.put("/xapi/projects/<project>/wrappers/<int:wrapper_id>/<state>")
def set_enabled(project: str, wrapper_id: int, state: str) -> Response:
    if state not in ("enabled", "disabled"):
        abort(404)
    auth.require_project_role(project, "own")
    auth.refuse_job("switch wrappers")
    db = get_db()
    registry.set_enabled(db, project, _wrapper_id(wrapper_id), state == "enabled")
    db.commit()
    return Response(status=200)
