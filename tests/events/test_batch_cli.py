"""`xnat-ml batch` and `xnat-ml jobs` against the embedded server (local backend)."""

from __future__ import annotations

import re
import time

import pytest

from xnat_ml.containers.batch import BatchRecord, Selection, filter_jobs
from xnat_ml.errors import XnatMlError

SESSIONS = {  # label: (subject, xsiType)
    "PAT001_MR": ("S1", "xnat:mrSessionData"),
    "PAT002_MR": ("S2", "xnat:mrSessionData"),
    "PAT003bad_MR": ("S3", "xnat:mrSessionData"),
    "PAT004_CT": ("S4", "xnat:ctSessionData"),
    "OTHER_MR": ("S5", "xnat:mrSessionData"),
}
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


@pytest.fixture
def probe_project(xnat_server, project, probe_wrapper, enable_in):
    enable_in(project, probe_wrapper)
    http, url = xnat_server.session(), xnat_server.url
    for label, (subject, xsi_type) in SESSIONS.items():
        http.put(f"{url}/data/projects/{project}/subjects/{subject}").raise_for_status()
        http.put(f"{url}/data/projects/{project}/subjects/{subject}/experiments/{label}",
                 params={"xsiType": xsi_type}).raise_for_status()  # fmt: skip
    return project


def wait_final(http, url: str, project: str, count: int, timeout: float = 60.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = http.get(f"{url}/xapi/containers", params={"project": project}).json()
        if len(jobs) >= count and all(j["status"] in FINAL for j in jobs):
            return jobs
        time.sleep(0.3)
    raise AssertionError(f"jobs of {project} not finished: {jobs}")


def batch_id(output: str) -> str:
    return re.search(r"^batch (\S+):", output, re.MULTILINE).group(1)


def job_rows(output: str) -> list[list[str]]:
    return [line.split("\t") for line in output.strip().splitlines()[1:]]


def test_selection_patterns_combine():
    row = {"ID": "XNAT_E00001", "label": "PAT001_MR", "subject_label": "S1"}
    assert Selection(sessions=["PAT*"]).session_ok(row)
    assert Selection(sessions=["X*", "PAT00?_MR"]).session_ok(row)  # patterns of one option: OR
    assert not Selection(sessions=["PAT*"], subjects=["S2"]).session_ok(row)  # options: AND
    assert Selection(ids=["XNAT_E00001"]).session_ok(row)
    assert Selection(ids=["PAT001_MR"]).session_ok(row)
    assert not Selection(ids=["PAT001"]).session_ok(row)  # ids are exact
    assert not Selection(sessions=["pat*"]).session_ok(row)  # case-sensitive
    assert Selection(scan_types=["T1*"]).scan_ok("T1w MPRAGE")
    assert not Selection(scan_types=["T1*"]).scan_ok("T2w")


def test_jobs_of_a_batch_by_container_or_workflow_id():
    """A real XNAT may answer a bulk launch with workflow ids only; containers carry them."""
    record = BatchRecord.from_json({
        "batch-id": "b1", "project": "P", "command": "c", "wrapper": "w", "wrapper-id": 1,
        "root-input": "session", "attempts": [{"items": [
            {"uri": "/archive/experiments/E1", "label": "E1", "container": "7"},
            {"uri": "/archive/experiments/E2", "label": "E2", "container": None,
             "workflow-id": "wf-2"},
            {"uri": "/archive/experiments/E3", "label": "E3", "container": None,
             "error": "refused"},
        ]}],
    })  # fmt: skip
    containers = [
        {"id": 7, "status": "Complete", "project": "P"},
        {"id": 8, "status": "Failed (Upload)", "project": "P", "workflow-id": "wf-2"},
        {"id": 9, "status": "Failed", "project": "P", "workflow-id": "wf-9"},
        {"id": 10, "status": "Failed", "project": "Q"},
    ]
    assert [c["id"] for c in filter_jobs(containers, keys=record.job_keys())] == [7, 8]
    assert [c["id"] for c in filter_jobs(containers, status="failed", project="P")] == [8, 9]
    with pytest.raises(XnatMlError, match="batch record: malformed"):
        BatchRecord.from_json({"batch-id": "b"})


def test_batch_run_jobs_and_rerun_failed(xnat_server, probe_project, cli):
    url, http, project = xnat_server.url, xnat_server.session(), probe_project

    run = cli("batch", "run", "--project", project, "--command", "batch-probe",
              "--sessions", "PAT*")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "4 launched, 0 refused" in run.stdout and "OTHER_MR" not in run.stdout
    batch = batch_id(run.stdout)
    wait_final(http, url, project, 4)

    listed = cli("jobs", "--project", project, "--batch", batch)
    assert listed.returncode == 0, listed.stderr
    rows = job_rows(listed.stdout)
    assert len(rows) == 4
    assert sorted(r[1] for r in rows) == ["Complete", "Complete", "Complete", "Failed"]

    failed = job_rows(cli("jobs", "--project", project, "--status", "failed").stdout)
    assert len(failed) == 1
    failed_id = failed[0][0]
    assert "PAT003bad_MR" in cli("jobs", "logs", failed_id).stdout
    assert "failing" in cli("jobs", "logs", failed_id, "--stderr").stdout

    # Only the failed subgroup is launched again.
    rerun = cli("batch", "rerun", batch, "--failed", "--project", project)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 launched, 0 refused" in rerun.stdout and "PAT003bad_MR" in rerun.stdout
    wait_final(http, url, project, 5)
    rows = job_rows(cli("jobs", "--project", project, "--batch", batch).stdout)
    assert len(rows) == 5
    record = http.get(f"{url}/data/projects/{project}/resources/ML_BATCHES/files/{batch}.json")
    assert [len(a["items"]) for a in record.json()["attempts"]] == [4, 1]


def test_kill_and_refusals(xnat_server, probe_project, cli):
    url, http, project = xnat_server.url, xnat_server.session(), probe_project
    run = cli("batch", "run", "--project", project, "--command", "batch-probe",
              "--ids", "PAT001_MR", "--input", "SECONDS=60")  # fmt: skip
    assert run.returncode == 0, run.stderr
    job = re.search(r"PAT001_MR: job (\d+)", run.stdout).group(1)
    deadline = time.monotonic() + 30
    while http.get(f"{url}/xapi/containers/{job}").json()["status"] != "Running":
        assert time.monotonic() < deadline, "job never ran"
        time.sleep(0.2)
    killed = cli("jobs", "kill", job)
    assert killed.returncode == 0, killed.stderr
    assert wait_final(http, url, project, 1)[0]["status"] == "Killed"

    missing = cli("batch", "run", "--project", project, "--command", "no-such-cmd")
    assert missing.returncode == 1
    assert "command no-such-cmd: not installed" in missing.stderr
    assert "Traceback" not in missing.stderr
    nothing = cli("batch", "run", "--project", project, "--command", "batch-probe",
                  "--sessions", "NOPE*")  # fmt: skip
    assert nothing.returncode == 1 and "nothing matches" in nothing.stderr
    unknown = cli("batch", "rerun", "batch-x", "--failed", "--project", project)
    assert unknown.returncode == 1 and "no record" in unknown.stderr
    [wrapper] = [c["xnat"][0]["id"] for c in http.get(f"{url}/xapi/commands").json()
                 if c["name"] == "batch-probe"]  # fmt: skip
    http.put(f"{url}/xapi/projects/{project}/wrappers/{wrapper}/disabled").raise_for_status()
    disabled = cli("batch", "run", "--project", project, "--command", "batch-probe")
    assert disabled.returncode == 1, disabled.stdout
    assert f"batch-probe/batch-probe: not enabled in project {project}" in disabled.stderr
    assert len(http.get(f"{url}/xapi/containers", params={"project": project}).json()) == 1


SCAN_PROBE = {
    "name": "scan-probe", "version": "1", "schema-version": "1.0", "type": "docker",
    "image": "busybox:latest", "command-line": "echo scan #TYPE#",
    "inputs": [{"name": "TYPE", "type": "string", "required": True}],
    "xnat": [{
        "name": "scan-probe", "contexts": ["xnat:imageScanData"],
        "external-inputs": [{"name": "scan", "type": "Scan", "required": True}],
        "derived-inputs": [{
            "name": "scan-type", "type": "string", "derived-from-wrapper-input": "scan",
            "derived-from-xnat-object-property": "scan-type",
            "provides-value-for-command-input": "TYPE", "user-settable": False,
        }],
        "output-handlers": [],
    }],
}  # fmt: skip


def test_scan_level_batch_selects_scan_types(
    xnat_server, project, cli, install_command, enable_in
):
    url, http = xnat_server.url, xnat_server.session()
    for wrapper in install_command(SCAN_PROBE).values():
        enable_in(project, wrapper)
    subject = f"{url}/data/projects/{project}/subjects/S1"
    http.put(subject).raise_for_status()
    for session in ("A_MR", "B_MR"):
        http.put(f"{subject}/experiments/{session}",
                 params={"xsiType": "xnat:mrSessionData"}).raise_for_status()  # fmt: skip
        for scan, scan_type in (("1", "T1w"), ("2", "T2w"), ("3", "T1w_post")):
            http.put(f"{subject}/experiments/{session}/scans/{scan}",
                     params={"xsiType": "xnat:mrScanData", "type": scan_type}).raise_for_status()

    run = cli("batch", "run", "--project", project, "--command", "scan-probe",
              "--sessions", "A_*", "--scan-types", "T1w*")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "2 launched" in run.stdout
    assert "A_MR/1: job" in run.stdout and "A_MR/3: job" in run.stdout
    assert "A_MR/2" not in run.stdout and "B_MR" not in run.stdout
    jobs = wait_final(http, url, project, 2)
    assert {j["status"] for j in jobs} == {"Complete"}
    outputs = {cli("jobs", "logs", str(j["id"])).stdout.strip() for j in jobs}
    assert outputs == {"scan T1w", "scan T1w_post"}


def test_jobs_logs_follow_waits_for_the_end_and_says_how_it_went(xnat_server, probe_project, cli):
    run = cli("batch", "run", "--project", probe_project, "--command", "batch-probe",
              "--input", "SECONDS=2", "--ids", "PAT001_MR", "PAT003bad_MR")  # fmt: skip
    assert run.returncode == 0, run.stderr
    good = re.search(r"PAT001_MR: job (\d+)", run.stdout).group(1)
    bad = re.search(r"PAT003bad_MR: job (\d+)", run.stdout).group(1)
    started = time.monotonic()
    followed = cli("jobs", "logs", good, "--follow", "--interval", "0.2")
    assert time.monotonic() - started >= 1.0  # it waited for the 2 s job to finish
    assert followed.returncode == 0 and followed.stdout == "session PAT001_MR\n"
    assert f"job {good}: Complete" in followed.stderr
    failed = cli("jobs", "logs", bad, "--stderr", "-f", "--interval", "0.2")
    assert failed.returncode == 1 and "failing" in failed.stdout
    assert f"job {bad}: Failed" in failed.stderr
