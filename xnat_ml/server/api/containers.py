"""Launching wrappers and following the jobs: XNAT's launch, bulk launch and /xapi/containers.

A launch is checked here (project edit rights → 403, wrapper and inputs → 404/400) and recorded
as a `Created` job; resolution against the archive, staging, running and uploading happen in the
Container Service's worker threads, so the answer comes at once, as XNAT's does.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, NotFound

from xnat_ml.bounded_json import MAX_JSON_BYTES, load_json
from xnat_ml.containers import jobs, registry
from xnat_ml.containers.command import Command, Wrapper
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.resolve import (
    InputError,
    check_inputs,
    check_object_project,
    check_object_type,
    object_uri,
)
from xnat_ml.containers.validate import OBJECT_TYPES
from xnat_ml.server import auth
from xnat_ml.server.container_service import container_service
from xnat_ml.server.faults import fault_point
from xnat_ml.server.formats.json_body import json_body, limit_body
from xnat_ml.server.store import signals
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import Project
from xnat_ml.server.store.objects import resolve_object
from xnat_ml.xnat.uris import parse_path

bp = Blueprint("containers", __name__)


def _launch_values() -> dict:
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        limit_body(MAX_JSON_BYTES)  # the same cap as a JSON launch body
        values = request.form.to_dict()
    else:
        values = json_body("Launch body", empty={})
    if not isinstance(values, dict):
        raise BadRequest("Launch body must be a JSON object of input name: value.")
    return values


def _wrapper_for(project: str, wrapper_id: str) -> tuple[Command, Wrapper]:
    found = registry.find_wrapper(get_db(), wrapper_id)
    if found is None:
        raise NotFound(f"Wrapper {wrapper_id} does not exist.")
    command, wrapper = found
    if not registry.is_enabled(get_db(), registry.SITE, wrapper.id):
        raise BadRequest(f"Wrapper {wrapper.name!r} is not enabled site-wide.")
    if not registry.is_enabled(get_db(), project, wrapper.id):
        raise BadRequest(f"Wrapper {wrapper.name!r} is not enabled in project {project!r}.")
    return command, wrapper


def _create_job(
    project: str, command: Command, wrapper: Wrapper, root: str, values: dict, bulk_id: str | None
) -> Job:
    """Check the inputs (InputError → 400) and store a Created job (with whatever the
    `job_creating` receivers add: the Event Service's delivery record)."""
    if root not in {i.name for i in wrapper.external_inputs}:
        raise InputError(root, f"not an external input of wrapper {wrapper.name!r}")
    params = check_inputs(command, wrapper, values)
    for inp in wrapper.external_inputs:
        if inp.type in OBJECT_TYPES and params.get(inp.name):
            _check_archive_object(project, inp.name, inp.type, params[inp.name])
    sensitive = {i.name for i in (*wrapper.inputs, *command.inputs) if i.sensitive}
    user = auth.require_login()
    db = get_db()
    job = Job(
        command_id=command.id,
        wrapper_id=wrapper.id,
        command_name=command.name,
        wrapper_name=wrapper.name,
        project=project,
        root_element=root,
        root_uri=str(params.get(root, "")),
        username=user.username,
        host=current_app.config["SITE_URL"] or request.host_url,
        backend=container_service.get().backend_name,
        bulk_id=bulk_id,
        params=params,
        inputs={k: ("*****" if k in sensitive else v) for k, v in params.items()},
    )
    job.set_status(jobs.CREATED, f"launched by {user.username}")
    db.add(job)
    db.flush()
    job.work_dir = str(current_app.config["DATA_DIR"] / "containers" / str(job.id))
    signals.job_creating.send(current_app._get_current_object(), job=job, db=db)
    db.commit()
    fault_point("job-created")
    return job


def _check_archive_object(project: str, name: str, kind: str, value: str) -> None:
    """A launch names objects of the launch project, of the input's type (InputError → 400):
    the job would otherwise be accepted only to fail, run on the wrong object, or read another
    project's data under this one (the worker checks again when it resolves)."""
    uri = object_uri(name, kind, value)
    try:  # a resource: check the object that holds it
        obj = resolve_object(parse_path(uri).owner(), access="read")
    except HTTPException:
        raise InputError(name, f"{value!r}: no such object you may read") from None
    if kind != "Resource":
        check_object_type(name, kind, obj.xsi_type)
    check_object_project(name, uri, obj.project_obj.id, project)


def _report(job: Job) -> dict:
    return {
        "status": "success",
        "params": job.inputs,
        "id": job.id,
        "container-id": str(job.id),
        "command-id": job.command_id,
        "wrapper-id": job.wrapper_id,
        "workflow-id": None,
        "type": "container",
    }


@bp.post("/xapi/projects/<project>/wrappers/<wrapper_id>/root/<root>/launch")
@bp.post("/xapi/projects/<project>/commands/<int:_cid>/wrappers/<wrapper_id>/root/<root>/launch")
def launch(project: str, wrapper_id: str, root: str, _cid: int | None = None) -> Response:
    auth.require_project_role(project, "edit")
    command, wrapper = _wrapper_for(project, wrapper_id)
    values = _launch_values()
    try:
        job = _create_job(project, command, wrapper, root, values, None)
    except InputError as exc:
        return jsonify({"status": "failure", "params": values, "message": str(exc)}), 400
    container_service.get().submit(job.id)
    return jsonify(_report(job))


@bp.post("/xapi/projects/<project>/wrappers/<wrapper_id>/root/<root>/bulklaunch")
def bulk_launch(project: str, wrapper_id: str, root: str) -> Response:
    """The root input holds a list of objects (a JSON list, or a JSON-encoded list string)."""
    auth.require_project_role(project, "edit")
    command, wrapper = _wrapper_for(project, wrapper_id)
    values = _launch_values()
    targets = values.get(root)
    if isinstance(targets, str):
        try:
            targets = load_json(targets, root) if targets.strip().startswith("[") else [targets]
        except ValueError:
            targets = None
    if not isinstance(targets, list) or not targets:
        raise BadRequest(f"input {root!r}: bulk launch needs a list of objects")
    bulk_id = uuid.uuid4().hex[:16]
    successes, failures = [], []
    for target in targets:
        params = {**values, root: target}
        try:
            job = _create_job(project, command, wrapper, root, params, bulk_id)
        except InputError as exc:
            failures.append({"status": "failure", "params": params, "message": str(exc)})
            continue
        container_service.get().submit(job.id)
        successes.append(_report(job))
    return jsonify({"bulk-launch-id": bulk_id, "successes": successes, "failures": failures})


# ---------------------------------------------------------------------------- containers


def _visible(job: Job, access: str = "read") -> bool:
    """The caller's role in the job's project now, not who launched it: a user removed from
    the project loses its jobs and their logs (which can hold tokens) with it."""
    user = auth.require_login()
    project = get_db().scalar(select(Project).where(Project.id == job.project))
    return project is not None and auth.may(user, project, access)


def _job(job_id: int, access: str = "read") -> Job:
    job = get_db().get(Job, job_id)
    if job is None or not _visible(job, "read"):
        raise NotFound(f"Container {job_id} does not exist.")
    if not _visible(job, access):
        raise Forbidden(f"Container {job_id}: you may not {access} it.")
    return job


@bp.get("/xapi/containers")
@bp.get("/xapi/projects/<project>/containers")
def list_containers(project: str | None = None) -> Response:
    user = auth.require_login()
    query = select(Job).order_by(Job.id)
    project = project or request.args.get("project")
    if project:
        auth.require_project_role(project, "read")
        query = query.where(Job.project == project)
    for arg, column in (("status", Job.status), ("bulk-launch-id", Job.bulk_id),
                        ("command-name", Job.command_name)):  # fmt: skip
        if request.args.get(arg):
            query = query.where(column == request.args[arg])
    rows = get_db().scalars(query)
    if not user.is_admin and not project:
        readable = auth.readable_project_pks(user)
        ids = set(get_db().scalars(select(Project.id).where(Project.pk.in_(readable or []))))
        rows = [j for j in rows if j.project in ids]
    return jsonify([j.to_json() for j in rows])


@bp.get("/xapi/containers/<int:job_id>")
def get_container(job_id: int) -> Response:
    return jsonify(_job(job_id).to_json())


@bp.route("/xapi/containers/<int:job_id>/kill", methods=["POST", "PUT"])
def kill_container(job_id: int) -> Response:
    _job(job_id, "edit")
    get_db().rollback()  # release this request's write lock: the service writes in its own session
    status = container_service.get().kill(job_id)
    return Response(status, 200, mimetype="text/plain")


@bp.get("/xapi/containers/<int:job_id>/logs/<name>")
@bp.get("/xapi/containers/<int:job_id>/logs")
def container_logs(job_id: int, name: str = "stdout") -> Response:
    if name not in ("stdout", "stderr"):
        raise NotFound(f"Log {name!r} does not exist (stdout or stderr).")
    job = _job(job_id)
    path = f"{job.work_dir}/logs/{name}.log"
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except FileNotFoundError:
        text = b""
    if not text and not job.finished and job.backend_job_id:
        # Docker and Slurm keep a running job's output themselves until it ends
        stdout, stderr = container_service.get().backend(job.backend).logs(job.backend_job_id)
        text = (stdout if name == "stdout" else stderr).encode()
    return Response(text, 200, mimetype="text/plain")
