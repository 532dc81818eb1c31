"""XNAT workflow entries for jobs, on the local backend: the launch opens one on its root object,
the job gets its id as XNAT_WORKFLOW_ID and reports its step through XNAT's PUT
/data/workflows/{id} with its own token; the entry follows the job to its end and is read where
XNAT serves it. Who may read and change one, and bad updates. A training job names its run on
its workflow and its record."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from e2e import install_enabled, job_logs, wait_job
from jobs import TRAIN, cpu_site_copy

from xnat_ml.xnat import connect

sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))
from xnat_project import set_up  # noqa: E402

SCRIPT = (
    "from xnat_ml.xnat import connect; from xnat_ml.xnat.workflow import WorkflowProgress; "
    "s = connect(); WorkflowProgress(s).report('halfway there', 50, final=True); s.disconnect()"
)


def _command(name: str) -> dict:
    """A session command that writes its XNAT_WORKFLOW_ID into a resource and reports a step."""
    return {
        "name": name, "version": "1", "schema-version": "1.0", "type": "docker",
        "image": "xnat-ml/xnat-ml:0.1.0",
        "command-line": f'printf %s "$XNAT_WORKFLOW_ID" > /output/id.txt && python -c "{SCRIPT}"',
        "mounts": [{"name": "out", "writable": True, "path": "/output"}],
        "inputs": [], "outputs": [{"name": "id", "mount": "out", "required": True}],
        "xnat": [{
            "name": f"{name}-session", "contexts": ["xnat:imageSessionData"],
            "external-inputs": [{"name": "session", "type": "Session", "required": True}],
            "derived-inputs": [],
            "output-handlers": [{"name": "id-resource", "accepts-command-output": "id",
                                 "as-a-child-of": "session", "label": "WF"}],
        }],
    }  # fmt: skip


@pytest.fixture(scope="module")
def site(xnat_server):
    """Project WF_A (session S1, wrapper enabled) with Member wf_member; project WF_B with its
    own Member wf_other (in WF_A only a Collaborator); wf_outsider in neither."""
    url, http = xnat_server.url, xnat_server.session()
    for project in ("WF_A", "WF_B"):
        http.put(f"{url}/data/projects/{project}").raise_for_status()
    http.put(f"{url}/data/projects/WF_A/subjects/S1").raise_for_status()
    session = http.put(f"{url}/data/projects/WF_A/subjects/S1/experiments/S1_MR",
                       params={"xsiType": "xnat:mrSessionData"})  # fmt: skip
    session.raise_for_status()
    xnat_server.add_user("wf_member", "wf-member-pw", "WF_A", "Member")
    xnat_server.add_user("wf_other", "wf-other-pw", "WF_B", "Member")
    http.put(f"{url}/data/projects/WF_A/users/Collaborators/wf_other").raise_for_status()
    xnat_server.add_user("wf_outsider", "wf-outsider-pw", "WF_B", "Collaborator")
    http.delete(f"{url}/data/projects/WF_B/users/Collaborators/wf_outsider")
    command = _command("wf-probe")
    assert http.post(f"{url}/xapi/commands", json=command).status_code in (201, 409)
    [listed] = http.get(f"{url}/xapi/commands", params={"name": "wf-probe"}).json()
    wrapper = listed["xnat"][0]["id"]
    http.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
    http.put(f"{url}/xapi/projects/WF_A/wrappers/{wrapper}/enabled").raise_for_status()
    return {"session": session.text.strip(), "wrapper": wrapper}


def _launch(xnat_server, site, user: str, password: str) -> dict:
    member = xnat_server.session(user, password)
    answer = member.post(
        f"{xnat_server.url}/xapi/projects/WF_A/wrappers/{site['wrapper']}/root/session/launch",
        json={"session": f"/archive/experiments/{site['session']}"},
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_launch_opens_a_workflow_the_job_reports_on(xnat_server, site):
    url, member = xnat_server.url, xnat_server.session("wf_member", "wf-member-pw")
    launched = _launch(xnat_server, site, "wf_member", "wf-member-pw")
    workflow_id = launched["workflow-id"]
    assert workflow_id and workflow_id.isdigit(), launched
    first = member.get(f"{url}/xapi/workflows/{workflow_id}").json()
    assert first["status"] in ("Queued", "Running", "Finalizing", "Complete"), first
    job = wait_job(xnat_server, launched["id"])
    assert job["status"] == "Complete", job
    assert job["workflow-id"] == workflow_id
    # the job saw its workflow id, and reported a step on it with its own token
    written = member.get(f"{url}/data/experiments/{site['session']}/resources/WF/files/id.txt")
    assert written.text == workflow_id
    assert job["message"] == "halfway there; uploaded 1 output(s)", job["message"]
    workflow = member.get(f"{url}/xapi/workflows/{workflow_id}").json()
    assert (workflow["status"], workflow["pipelineName"]) == ("Complete", "wf-probe-session")
    assert (workflow["stepDescription"], workflow["percentageComplete"]) == ("halfway there", "50")
    assert (workflow["id"], workflow["externalId"], workflow["dataType"]) == (
        site["session"], "WF_A", "xnat:mrSessionData")  # fmt: skip
    assert workflow["createUser"] == "wf_member"
    # the same entry where XNAT lists an object's workflows, and as its item
    for listing in (f"/data/experiments/{site['session']}/workflows",
                    "/data/projects/WF_A/subjects/S1/experiments/S1_MR/workflows",
                    f"/data/services/workflows/wf-probe?experiment={site['session']}"):  # fmt: skip
        rows = member.get(f"{url}{listing}", params={"format": "json"}).json()
        ids = [str(r["wrk_workflowdata_id"]) for r in rows["ResultSet"]["Result"]]
        assert workflow_id in ids, (listing, rows)
    item = member.get(f"{url}/data/workflows/{workflow_id}", params={"format": "json"}).json()
    assert item["items"][0]["data_fields"]["pipeline_name"] == "wf-probe-session"
    xml = member.get(f"{url}/data/workflows/{workflow_id}")
    assert xml.headers["Content-Type"].startswith("text/xml") and 'status="Complete"' in xml.text


def test_who_may_read_and_change_a_workflow(xnat_server, site):
    url = xnat_server.url
    workflow_id = _launch(xnat_server, site, "wf_member", "wf-member-pw")["workflow-id"]
    put = f"{url}/data/workflows/{workflow_id}"
    step = {"wrk:workflowData/step_description": "tampered"}
    # a Member of another project (a Collaborator here) may read it but not change it
    other = xnat_server.session("wf_other", "wf-other-pw")
    assert other.get(f"{url}/xapi/workflows/{workflow_id}").status_code == 200
    refused = other.put(put, params=step)
    assert refused.status_code == 403 and "not allowed" in refused.text, refused.text
    # someone outside the project learns nothing about it
    outsider = xnat_server.session("wf_outsider", "wf-outsider-pw")
    assert outsider.get(f"{url}/xapi/workflows/{workflow_id}").status_code == 404
    assert outsider.put(put, params=step).status_code == 403
    rows = outsider.get(f"{url}/data/services/workflows", params={"display": "ALL"}).json()
    assert not [r for r in rows["ResultSet"]["Result"] if r["externalid"] == "WF_A"]
    # its launcher may; bad fields and values are one-line 400s; nothing changed by them
    member = xnat_server.session("wf_member", "wf-member-pw")
    for bad in ({"pipeline_name": "x"}, {"percentageComplete": "150"},
                {"percentageComplete": "lots"}, {"step_description": "a\x00b"}, {}):  # fmt: skip
        answer = member.put(put, params=bad)
        assert answer.status_code == 400 and "\n" not in answer.text.strip(), (bad, answer.text)
    assert member.put(put, params={"step_description": "mine", "percentageComplete": "5"}).ok
    workflow = member.get(f"{url}/xapi/workflows/{workflow_id}").json()
    assert workflow["stepDescription"] in ("mine", "halfway there"), workflow
    assert member.get(f"{url}/xapi/workflows/999999").status_code == 404


def test_a_deleted_project_takes_its_workflows(xnat_server, site, project):
    url, http = xnat_server.url, xnat_server.session()
    http.put(f"{url}/data/projects/{project}/subjects/S").raise_for_status()
    session = http.put(f"{url}/data/projects/{project}/subjects/S/experiments/S_MR",
                       params={"xsiType": "xnat:mrSessionData"}).text.strip()  # fmt: skip
    [listed] = http.get(f"{url}/xapi/commands", params={"name": "wf-probe"}).json()
    wrapper = listed["xnat"][0]["id"]
    http.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/enabled").raise_for_status()
    launched = http.post(
        f"{url}/xapi/projects/{project}/wrappers/{wrapper}/root/session/launch",
        json={"session": f"/archive/experiments/{session}"},
    ).json()
    wait_job(xnat_server, launched["id"])
    assert http.get(f"{url}/xapi/workflows/{launched['workflow-id']}").status_code == 200
    http.delete(f"{url}/data/projects/{project}").raise_for_status()
    deadline = time.monotonic() + 10
    while http.get(f"{url}/xapi/workflows/{launched['workflow-id']}").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_a_training_job_reports_its_run_on_its_workflow_and_record(xnat_server, project,
                                                                    tmp_path):  # fmt: skip
    """`train` launched on the local backend (two tiny epochs): the container record names the
    run from its first write there on; the workflow's step names the run it stored, at 100 %,
    and the record ends with the same line."""
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as xnat:
        set_up(xnat, project, tmp_path, cases=6)
    wrappers = install_enabled(xnat_server, project, cpu_site_copy(json.loads(TRAIN.read_text())))
    launched = xnat_server.session().post(
        f"{xnat_server.url}/xapi/projects/{project}/wrappers/{wrappers['train-project']}"
        "/root/project/launch",
        json={"project": f"/data/projects/{project}", "CONFIG": "tiny", "RUN_ID": "followed"},
    )
    assert launched.status_code == 200, launched.text
    job = wait_job(xnat_server, launched.json()["id"], timeout=540)
    assert job["status"] == "Complete", (job, job_logs(xnat_server, job["id"]))
    assert job["message"].startswith("stored ML_RUNS/followed: completed, epoch 2/2, best "), job
    named = [(h["status"], h["message"]) for h in job["history"] if "ML_RUNS/" in h["message"]]
    assert named[0] == ("Running", "writing run ML_RUNS/followed"), job["history"]
    workflow = xnat_server.session().get(
        f"{xnat_server.url}/xapi/workflows/{job['workflow-id']}").json()  # fmt: skip
    assert (workflow["status"], workflow["percentageComplete"]) == ("Complete", "100"), workflow
    assert workflow["stepDescription"] == job["message"]
    assert (workflow["pipelineName"], workflow["id"], workflow["dataType"]) == (
        "train-project", project, "xnat:projectData")  # fmt: skip
