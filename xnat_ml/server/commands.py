"""`/xapi/commands`: install, list and remove Container Service commands; per-project enablement.

Shapes follow XNAT's Container Service REST API. The job runner (`ContainerService`) starts with
this blueprint, so the whole Container Service comes with one line in `app.BLUEPRINT_MODULES`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from flask import Blueprint, Response, abort, current_app, jsonify, request
from sqlalchemy import delete, select
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from xnat_ml.containers import registry, xsitypes
from xnat_ml.containers.command import parse_command
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.registry import CommandRecord, WrapperSetting
from xnat_ml.containers.service import ContainerService
from xnat_ml.containers.validate import validate
from xnat_ml.server import auth, job_writes, signals
from xnat_ml.server.db import get_db, reader_factory, session_factory
from xnat_ml.server.faults import fault_point
from xnat_ml.server.models import User

bp = Blueprint("commands", __name__)


@bp.record_once
def _start_service(state) -> None:
    app = state.app
    sessions = session_factory(app)

    def token_for(username: str, job_id: int) -> tuple[str, str]:
        with app.app_context():
            user = get_db().scalar(select(User).where(User.username == username))
            if user is None or not user.enabled:
                raise auth.Forbidden(f"user {username!r} no longer exists or is disabled")
            token, secret = auth.issue_token(user, job_id=job_id)
            return token.alias, secret

    def revoke_tokens(job_id: int) -> None:
        with app.app_context():
            auth.revoke_job_tokens(job_id)
            get_db().commit()

    service = ContainerService(
        sessions,
        app.config["DATA_DIR"] / "containers",
        token_for,
        revoke_tokens,
        backend=_setting(app, "CONTAINER_BACKEND", "local"),
        workers=int(_setting(app, "CONTAINER_WORKERS", "4")),
        backend_options=json.loads(_setting(app, "CONTAINER_BACKEND_OPTIONS", "{}")),
        readers=reader_factory(app),
        raw_inputs=json.loads(_setting(app, "CONTAINER_RAW_INPUTS", "[]")),
        keep_writes=lambda job_id: job_writes.keep(app, job_id),
        undo_writes=lambda job_id: job_writes.undo(app, job_id),
        max_attempts=int(_setting(app, "CONTAINER_MAX_ATTEMPTS", "3")),
        fault_point=fault_point,
    )
    app.extensions["xnat_ml.containers"] = service
    signals.project_deleting.connect(_retire_project_jobs, sender=app)
    # Jobs waiting from before a restart resolve against the server: start them once it listens.
    signals.server_ready.connect(lambda _app: service.resume_pending(), sender=app, weak=False)
    service.recover()  # jobs the last process left: requeued, or left to re-attach


def _retire_project_jobs(app, *, project, db: Session, **_extra) -> Callable[[], None]:
    """`project_deleting`: the project's jobs (with their history) and wrapper switches go in
    the deleting transaction; once it commits, running jobs are stopped and their files
    (logs included) removed."""
    retired = [
        (row.id, row.backend, row.backend_job_id, row.work_dir)
        for row in db.execute(
            select(Job.id, Job.backend, Job.backend_job_id, Job.work_dir).where(
                Job.project == project.id
            )
        )
    ]
    auth.revoke_project_job_tokens(project.id)  # before the job rows that name the tokens go
    job_writes.forget(db, [job_id for job_id, *_rest in retired])  # their objects go too
    db.execute(delete(Job).where(Job.project == project.id))
    db.execute(delete(WrapperSetting).where(WrapperSetting.project == project.id))
    service = app.extensions["xnat_ml.containers"]

    def after_commit() -> None:
        service.retire(retired)
        for job_id, *_rest in retired:
            job_writes.drop_kept(app, job_id)

    return after_commit


def _setting(app, key: str, default: str) -> str:
    """App config (create_app keyword), else environment XNAT_ML_<KEY>, else the default."""
    value = app.config.get(key)
    if value is None:
        value = os.environ.get(f"XNAT_ML_{key}", default)
    return value if isinstance(value, str) else json.dumps(value)


def service() -> ContainerService:
    return current_app.extensions["xnat_ml.containers"]


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
    raw = request.get_data(cache=False)
    command, problems = parse_command(raw)
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
    db = get_db()
    registry.set_enabled(db, project, _wrapper_id(wrapper_id), state == "enabled")
    db.commit()
    return Response(status=200)
