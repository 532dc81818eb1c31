"""Launching wrappers and following the jobs: XNAT's launch, bulk launch and /xapi/containers.

A launch is checked (project edit rights → 403, wrapper and inputs → 404/400; launches.py) and
recorded as a `Created` job; resolution against the archive, staging, running and uploading
happen in the Container Service's worker threads, so the answer comes at once, as XNAT's does.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Forbidden, NotFound

from xnat_ml.bounded_json import MAX_JSON_BYTES, load_json
from xnat_ml.containers.jobs import Job
from xnat_ml.containers.resolve import InputError
from xnat_ml.server import auth
from xnat_ml.server.container_service import container_service
from xnat_ml.server.formats.json_body import json_body, limit_body
from xnat_ml.server.launches import create_job, wrapper_for
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.models import Project

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


def _report(job: Job) -> dict:
    return {
        "status": "success",
        "params": job.inputs,
        "id": job.id,
        "container-id": str(job.id),
        "command-id": job.command_id,
        "wrapper-id": job.wrapper_id,
        "workflow-id": None if job.workflow_id is None else str(job.workflow_id),
        "type": "container",
    }


@bp.post("/xapi/projects/<project>/wrappers/<wrapper_id>/root/<root>/launch")
@bp.post("/xapi/projects/<project>/commands/<int:_cid>/wrappers/<wrapper_id>/root/<root>/launch")
def launch(project: str, wrapper_id: str, root: str, _cid: int | None = None) -> Response:
    auth.require_project_role(project, "edit")
    command, wrapper = wrapper_for(project, wrapper_id)
    values = _launch_values()
    try:
        job = create_job(project, command, wrapper, root, values)
    except InputError as exc:
        return jsonify({"status": "failure", "params": values, "message": str(exc)}), 400
    container_service.get().submit(job.id)
    return jsonify(_report(job))


@bp.post("/xapi/projects/<project>/wrappers/<wrapper_id>/root/<root>/bulklaunch")
def bulk_launch(project: str, wrapper_id: str, root: str) -> Response:
    """The root input holds a list of objects (a JSON list, or a JSON-encoded list string)."""
    auth.require_project_role(project, "edit")
    command, wrapper = wrapper_for(project, wrapper_id)
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
            job = create_job(project, command, wrapper, root, params, bulk_id)
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
    if not auth.is_admin(user) and not project:
        readable = auth.readable_project_pks(user)
        ids = set(get_db().scalars(select(Project.id).where(Project.pk.in_(readable or []))))
        rows = [j for j in rows if j.project in ids]
    return jsonify([j.to_json() for j in rows])


@bp.get("/xapi/containers/<int:job_id>")
def get_container(job_id: int) -> Response:
    return jsonify(_job(job_id).to_json())


@bp.route("/xapi/containers/<int:job_id>/kill", methods=["POST", "PUT"])
def kill_container(job_id: int) -> Response:
    """Members kill the jobs they launched; Owners any job of the project, admins any job."""
    job = _job(job_id, "edit")
    if job.username != auth.require_login().username and not _visible(job, "own"):
        raise Forbidden(
            f"Container {job_id}: launched by {job.username}; "
            "only its launcher or a project Owner may kill it."
        )
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
