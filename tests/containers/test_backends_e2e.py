"""`xnat-ml serve` with its Container Service on the Docker and Slurm backends, end to end.

Each backend gets its own server. An RTSTRUCT saved through /xapi/roi (as OHIF does) must turn
into the scan's image NIfTI and the ROI collection's label map with no other action, through the
subscription that `xnat-ml events install` takes from event_handlers/. Jobs running while the
server restarts are re-attached and finish; kill works; 50 launches at once all finish.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
IMAGE = json.loads((REPO / "command_json/roi-to-mask.json").read_text())["image"]


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
    if kind == "docker":
        daemon = request.getfixturevalue("dockerd")
        repository, tag = IMAGE.rsplit(":", 1)
        daemon.client().images.get(daemon.image).tag(repository, tag)
        options = {"docker_url": daemon.url, "docker_network": "host",
                   "docker_binds": json.dumps(daemon.binds)}  # fmt: skip
        env = {}
    else:
        cluster = request.getfixturevalue("slurm")
        options, env = {}, cluster.env
    args = ["--backend", kind]
    for key, value in options.items():
        args += ["--backend-option", f"{key}={value}"]
    server = start_xnat_server(f"xnat-{kind}", args, env)
    server.backend = kind
    return server


def wait_job(server, job_id: int, timeout: float = 180) -> dict:
    http = server.session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"{server.url}/xapi/containers/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"container {job_id} still {job['status']} after {timeout} s")


def wait_running(server, job_id: int, timeout: float = 60) -> None:
    http = server.session()
    deadline = time.monotonic() + timeout
    while http.get(f"{server.url}/xapi/containers/{job_id}").json()["status"] != "Running":
        assert time.monotonic() < deadline, f"container {job_id} never ran"
        time.sleep(0.2)


def job_logs(server, job_id: int) -> str:
    url = f"{server.url}/xapi/containers/{job_id}/logs"
    http = server.session()
    return http.get(f"{url}/stdout").text[-2000:] + http.get(f"{url}/stderr").text[-2000:]


def resources(server, uri: str) -> set[str]:
    rows = server.session().get(f"{server.url}{uri}/resources", params={"format": "json"})
    rows.raise_for_status()
    return {row["label"] for row in rows.json()["ResultSet"]["Result"]}


@pytest.fixture(scope="module")
def site(server):
    """A project with the shipped subscriptions installed, then one sample subject built in it:
    the build saves an RTSTRUCT through /xapi/roi, which must set roi-to-mask off."""
    project = f"E2E_{server.backend.upper()}"
    server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
    installed = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "events", "install", "--project", project,
         "--url", server.url, "--user", server.user, "--password", server.password],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    with connect(server.url, server.user, server.password) as session:
        [built] = build_sample_project(session, project, subjects=1)
    return project, built


def test_saving_an_rtstruct_makes_nifti_and_label_map(server, site):
    project, built = site
    http = server.session()
    session_uri = f"/data/experiments/{built.session_id}"
    assessors = http.get(f"{server.url}{session_uri}/assessors", params={"format": "json"})
    roi = next(a for a in assessors.json()["ResultSet"]["Result"]
               if a["label"] == built.roi_collection)  # fmt: skip
    deadline = time.monotonic() + 300
    while LABELMAP_RESOURCE not in resources(server, f"{session_uri}/assessors/{roi['ID']}"):
        jobs = http.get(f"{server.url}/xapi/containers", params={"project": project}).json()
        failed = [j for j in jobs if j["status"] in FINAL and j["status"] != "Complete"]
        assert not failed, [
            (j["status"], j.get("message"), job_logs(server, j["id"])) for j in failed
        ]
        assert time.monotonic() < deadline, f"no label map after 300 s; jobs: {jobs}"
        time.sleep(0.5)
    [job] = http.get(f"{server.url}/xapi/containers", params={"project": project}).json()
    assert job["status"] == "Complete" and job["wrapper-name"] == "roi-to-mask-roi-collection"
    scans = http.get(f"{server.url}{session_uri}/scans", params={"format": "json"}).json()
    assert any(
        NIFTI_RESOURCE in resources(server, f"{session_uri}/scans/{scan['ID']}")
        for scan in scans["ResultSet"]["Result"]
    )


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
    http = server.session()
    answer = http.post(f"{server.url}/xapi/commands", json=command)
    assert answer.status_code in (201, 409), answer.text
    [listed] = http.get(f"{server.url}/xapi/commands", params={"name": "sleeper"}).json()
    wrapper = listed["xnat"][0]["id"]
    http.put(f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/enabled")
    return wrapper


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
