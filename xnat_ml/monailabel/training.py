"""``/train/``: fine-tuning a model version through the Container Service as the caller (the
``finetune`` command's wrapper, enabled in the project) on the config's dataset built again
first (labels saved since are in it), its run mirrored to ML_RUNS as any other; ``GET``
reports the latest run this API started, ``DELETE`` kills its job. An Owner promotes the run
as usual (``xnat-ml promote``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from xnat.session import XNATSession

from xnat_ml.containers.installed import find_wrapper
from xnat_ml.datasets.project_build import build_in_project
from xnat_ml.datasets.versions import DEFINITION_FILE, find_version, read_file
from xnat_ml.errors import XnatMlError
from xnat_ml.monailabel.models import ModelName
from xnat_ml.training.project_configs import list_configs, read_config
from xnat_ml.training.project_runs import list_runs, run_status
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import project_uri, segment

COMMAND = "finetune"
RUN_PREFIX = "monailabel-"
RUNNING = ("Created", "Queued", "Running", "Staging", "Uploading", "Finalizing")


class NotReady(XnatMlError):
    """What training needs is missing in the project (answered 409)."""


def trainers(session: XNATSession, project: str) -> dict[str, dict]:
    """``/info/``'s ``trainers``: the project's training configs."""
    return {name: {"description": f"training config {name} (ML_CONFIGS/{name}.json)",
                   "config": {}} for name in list_configs(session, project)}  # fmt: skip


def start(
    session: XNATSession, project: str, model: ModelName, params: dict[str, Any]
) -> dict[str, Any]:
    """Launch ``finetune`` from ``model`` with the config ``params['config']`` (or the
    project's only one); MONAI Label's task answer."""
    configs = list_configs(session, project)
    config = params.get("config") or (configs[0] if len(configs) == 1 else None)
    if not isinstance(config, str) or config not in configs:
        raise NotReady(f"project {project}: name one of its training configs as params "
                       f"'config' ({', '.join(configs) or 'it has none'})")  # fmt: skip
    wrapper = find_wrapper(session, COMMAND)
    if wrapper is None:
        raise NotReady(f"command {COMMAND}: not installed on the XNAT server")
    dataset = _rebuilt(session, project, read_config(session, project, config).dataset.name)
    run_id = f"{RUN_PREFIX}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
    body = {wrapper.root_input: project_uri(project), "FROM": f"{model.name}:{model.number}",
            "CONFIG": config, "DATASET": dataset, "RUN_ID": run_id}  # fmt: skip
    uri = (f"/xapi/projects/{segment(project)}/wrappers/{wrapper.wrapper_id}/root/"
           f"{segment(wrapper.root_input)}/launch")  # fmt: skip
    with reported_as(f"fine-tuning {model} with config {config}"):
        answer = session.post(uri, json=body, accepted_status=[200, 201]).json()
    return {"id": run_id, "name": str(model), "type": "train", "status": "SUBMITTED",
            "container": answer.get("id"), "config": config, "dataset": dataset}  # fmt: skip


def _rebuilt(session: XNATSession, project: str, name: str) -> str:
    """``NAME:N``: the config's dataset built again from its latest definition, so labels
    saved since are in it (a new version only when something changed)."""
    latest = find_version(session, project, name)
    definition = read_file(session, project, latest, DEFINITION_FILE)
    built = build_in_project(session, project, definition, name)
    return f"{name}:{(built.version or latest).number}"


def _jobs(session: XNATSession, project: str) -> list[dict[str, Any]]:
    with reported_as(f"project {project}: its {COMMAND} jobs"):
        jobs = session.get_json("/xapi/containers", query={"project": project,
                                                           "command-name": COMMAND})  # fmt: skip
    return [j for j in jobs if isinstance(j, dict) and RUN_PREFIX in json.dumps(j)]


def latest(session: XNATSession, project: str) -> dict[str, Any] | None:
    """The latest run this API started: its status.json, and MONAI Label's task state."""
    runs = sorted(r for r in list_runs(session, project) if r.startswith(RUN_PREFIX))
    jobs = _jobs(session, project)
    if not runs and not jobs:
        return None
    run_id = runs[-1] if runs else None
    status = (run_status(session, project, run_id) if run_id else None) or {}
    running = any(j.get("status") in RUNNING for j in jobs)
    state = str(status.get("state", ""))
    task = "RUNNING" if running else {"completed": "DONE", "killed": "STOPPED"}.get(state, "ERROR")
    return {"id": run_id, "type": "train", "status": task, "details": status,
            "jobs": [{"id": j.get("id"), "status": j.get("status")} for j in jobs[-5:]]}


def stop(session: XNATSession, project: str) -> list[Any]:
    """Kill this API's running finetune jobs (the caller's right decides); their ids."""
    killed = []
    for job in _jobs(session, project):
        if job.get("status") in RUNNING:
            with reported_as(f"job {job.get('id')}: killing it"):
                session.post(f"/xapi/containers/{int(job['id'])}/kill")
            killed.append(job.get("id"))
    return killed
