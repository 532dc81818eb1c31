"""Launching a wrapper: the checks and the `Created` job, for the REST API and the Event Service.

One path for both, so that an event's launch gets exactly the checks a user's launch gets (edit
rights in the project, wrapper enabled there and site-wide, inputs naming objects of the
project); the Event Service calls it in process as the subscription's owner, never over HTTP at
an address a request could have chosen. Resolution, staging and running happen afterwards in
the Container Service's workers.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import current_app
from sqlalchemy.orm import Session
from werkzeug.exceptions import BadRequest, HTTPException, NotFound

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
from xnat_ml.containers.workflows import Workflow
from xnat_ml.server import auth
from xnat_ml.server.container_service import container_service
from xnat_ml.server.faults import fault_point
from xnat_ml.server.store.db import get_db
from xnat_ml.server.store.objects import resolve_object
from xnat_ml.xnat.uris import parse_path

#: called with the job row (flushed) and its session before the job commits: rows that must
#: exist exactly when the job does (the Event Service's delivery record); an HTTPException
#: refuses the launch.
BeforeCommit = Callable[[Job, Session], None]


def wrapper_for(project: str, wrapper_id: str | int) -> tuple[Command, Wrapper]:
    """The wrapper, enabled site-wide and in the project (else 404/400)."""
    found = registry.find_wrapper(get_db(), wrapper_id)
    if found is None:
        raise NotFound(f"Wrapper {wrapper_id} does not exist.")
    command, wrapper = found
    if not registry.is_enabled(get_db(), registry.SITE, wrapper.id):
        raise BadRequest(f"Wrapper {wrapper.name!r} is not enabled site-wide.")
    if not registry.is_enabled(get_db(), project, wrapper.id):
        raise BadRequest(f"Wrapper {wrapper.name!r} is not enabled in project {project!r}.")
    return command, wrapper


def create_job(
    project: str,
    command: Command,
    wrapper: Wrapper,
    root: str,
    values: dict,
    bulk_id: str | None = None,
    before_commit: BeforeCommit | None = None,
) -> Job:
    """Check the inputs (InputError → 400) and store a Created job as the caller; the caller
    submits it to the Container Service."""
    if root not in {i.name for i in wrapper.external_inputs}:
        raise InputError(root, f"not an external input of wrapper {wrapper.name!r}")
    params = check_inputs(command, wrapper, values)
    objects = {
        inp.name: _check_archive_object(project, inp.name, inp.type, params[inp.name])
        for inp in wrapper.external_inputs
        if inp.type in OBJECT_TYPES and params.get(inp.name)
    }
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
        backend=container_service.get().backend_name,
        bulk_id=bulk_id,
        params=params,
        inputs={k: ("*****" if k in sensitive else v) for k, v in params.items()},
        workflow=_workflow(project, wrapper, objects.get(root), user.username, bulk_id),
    )
    job.set_status(jobs.CREATED, f"launched by {user.username}")
    db.add(job)
    db.flush()
    job.work_dir = str(current_app.config["DATA_DIR"] / "containers" / str(job.id))
    if before_commit is not None:
        before_commit(job, db)
    db.commit()
    fault_point("job-created")
    return job


def launch_on(
    project: str, wrapper_id: str | int, uri: str, values: dict, before_commit: BeforeCommit
) -> Job:
    """Launch the wrapper on an archive object as the caller (`auth.acting_as`), the object
    as its root input: its first external input, as in XNAT's CommandActionProvider. Refusals
    are the REST API's (HTTPException, InputError); the job is submitted."""
    auth.require_project_role(project, "edit")
    command, wrapper = wrapper_for(project, wrapper_id)
    if not wrapper.external_inputs:
        raise BadRequest(f"Wrapper {wrapper.name!r} has no external input to launch on.")
    root = wrapper.external_inputs[0].name
    job = create_job(project, command, wrapper, root, {**values, root: uri}, None, before_commit)
    container_service.get().submit(job.id)
    return job


def _workflow(project: str, wrapper: Wrapper, root, username: str, bulk_id: str | None) -> Workflow:
    """The launch's workflow, on its root object as XNAT's Container Service opens it: a
    scan's is its session's (with the scan id), a resource's its holder's; a root that is no
    archive object (a plain value) hangs it on the project."""
    scan_id = ""
    if root is None:
        root = resolve_object(f"/data/projects/{project}", access="read")
    if root.kind == "scan":
        scan_id, root = root.id, root.experiment
    return Workflow(
        object_id=root.id,
        scan_id=scan_id,
        project=project,
        data_type=root.xsi_type,
        pipeline_name=wrapper.name,
        job_id=bulk_id or "",
        create_user=username,
    )


def _check_archive_object(project: str, name: str, kind: str, value: str):
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
    return obj
