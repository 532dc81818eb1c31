"""`xnat-ml serve` with its Container Service on the Docker and Slurm backends, end to end.

Each backend gets its own server. An RTSTRUCT saved through /xapi/roi (as OHIF does) must turn
into the scan's image NIfTI and the ROI collection's label map with no other action, through the
subscription that `xnat-ml events install` takes from event_handlers/. Jobs running while the
server restarts are re-attached and finish; kill works; 50 launches at once all finish.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from e2e import (
    IMAGE,
    assert_roi_collection_became_masks,
    backend_setup,
    build_site,
    install_enabled,
    resources,
    start_backend_server,
    wait_job,
)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    ],
)
def server(request, start_xnat_server):
    """A server whose jobs run on the backend named by the parameter."""
    kind = request.param
    options, env = backend_setup(request, kind)
    return start_backend_server(start_xnat_server, f"xnat-{kind}", kind, options, env)


def wait_running(server, job_id: int, timeout: float = 60) -> None:
    http = server.session()
    deadline = time.monotonic() + timeout
    while http.get(f"{server.url}/xapi/containers/{job_id}").json()["status"] != "Running":
        assert time.monotonic() < deadline, f"container {job_id} never ran"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def site(server):
    project = f"E2E_{server.backend.upper()}"
    return project, build_site(server, project)


def test_saving_an_rtstruct_makes_nifti_and_label_map(server, site):
    project, built = site
    assert_roi_collection_became_masks(server, project, built)


def _install_sleeper(server, project: str) -> int:
    """A command that sleeps, then writes its one required output (a session resource)."""
    command = {
        "name": "sleeper", "version": "1", "schema-version": "1.0", "type": "docker",
        "image": IMAGE, "command-line": "sleep #SECONDS#; echo done > /output/done.txt",
        "mounts": [{"name": "out", "writable": True, "path": "/output"}],
        "inputs": [{"name": "SECONDS", "type": "number", "required": True},
                   {"name": "TAG", "type": "string", "required": True}],
        "outputs": [{"name": "o", "mount": "out", "required": True}],
        "xnat": [{
            "name": "sleeper-session", "contexts": ["xnat:imageSessionData"],
            "external-inputs": [{"name": "session", "type": "Session", "required": True}],
            "output-handlers": [{"name": "h", "accepts-command-output": "o",
                                 "as-a-child-of": "session", "label": "SLEPT_#TAG#"}],
        }],
    }  # fmt: skip
    return install_enabled(server, project, command)["sleeper-session"]


@pytest.fixture(scope="module")
def sleeper(server, site):
    """(project, session id, launch(seconds, tag) -> job id) on the sample session."""
    project, built = site
    wrapper = _install_sleeper(server, project)
    url = f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/root/session/launch"

    def launch(seconds: int, tag: str) -> int:
        values = {"session": built.session_id, "SECONDS": seconds, "TAG": tag}
        answer = server.session().post(url, json=values)
        assert answer.status_code == 200, answer.text
        return answer.json()["id"]

    return project, built.session_id, launch


def test_jobs_survive_a_server_restart(server, sleeper):
    project, session_id, launch = sleeper
    job_id = launch(10, "restart")
    wait_running(server, job_id)
    server.restart()
    job = wait_job(server, job_id)
    assert job["status"] == "Complete", job
    assert "re-attached" in json.dumps(job["history"])
    assert "SLEPT_restart" in resources(server, f"/data/experiments/{session_id}")


def test_kill(server, sleeper):
    project, session_id, launch = sleeper
    job_id = launch(120, "killed")
    wait_running(server, job_id)
    answer = server.session().post(f"{server.url}/xapi/containers/{job_id}/kill")
    assert answer.status_code == 200
    job = wait_job(server, job_id, timeout=60)
    assert job["status"] == "Killed", job
    assert "SLEPT_killed" not in resources(server, f"/data/experiments/{session_id}")


def test_fifty_launches_at_once(server, sleeper):
    project, session_id, launch = sleeper
    with ThreadPoolExecutor(10) as pool:
        ids = list(pool.map(launch, [0] * 50, [f"n{n}" for n in range(50)]))
    assert len(set(ids)) == 50
    jobs = [wait_job(server, job_id, timeout=600) for job_id in ids]
    assert [j["status"] for j in jobs] == ["Complete"] * 50, [j["message"] for j in jobs]
    assert {f"SLEPT_n{n}" for n in range(50)} <= resources(
        server, f"/data/experiments/{session_id}"
    )
