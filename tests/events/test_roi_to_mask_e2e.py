"""End to end on the embedded server, local backend: an annotator saves an RTSTRUCT through
/xapi/roi and, with no other action, the image NIfTI and the label map appear as resources,
through the subscription installed from event_handlers/ by `xnat-ml events install`."""

from __future__ import annotations

import time

import pytest

from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

pytestmark = pytest.mark.slow


def wait_for_job(http, url: str, project: str, wrapper: str, timeout: float = 240.0) -> dict:
    """The project's job of `wrapper`, once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = http.get(f"{url}/xapi/containers", params={"project": project}).json()
        mine = [j for j in jobs if j["wrapper-name"] == wrapper]
        if mine and all(j["status"] in ("Complete", "Failed", "Failed (Upload)", "Killed")
                        for j in mine):  # fmt: skip
            [job] = mine
            return job
        time.sleep(0.5)
    raise AssertionError(f"no finished {wrapper} job in {project} after {timeout} s: {jobs}")


def labels(http, uri: str) -> dict[str, dict]:
    rows = http.get(f"{uri}/resources", params={"format": "json"}).json()["ResultSet"]["Result"]
    return {row["label"]: row for row in rows}


def test_saving_an_rtstruct_makes_nifti_and_label_map(xnat_server, project, cli, probe_wrapper):
    url, http = xnat_server.url, xnat_server.session()
    # A payload filter on resources, as XNAT's own DICOM-to-NIfTI subscriptions write them:
    # imported scans carry their DICOM resource in the event object. (What the probe wrapper
    # then does with a scan does not matter here: only the filter's verdict.)
    on_scans = {
        "name": f"{project}: scans with DICOM",
        "event-filter": {"event-type": "ScanEvent", "project-ids": [project],
                         "payload-filter": "'DICOM' in @.resources[*].label"},
        "action-key": f"org.nrg.containers.services.CommandActionProvider:{probe_wrapper}",
    }  # fmt: skip
    assert http.post(f"{url}/xapi/events/subscription", json=on_scans).status_code == 201

    first = cli("events", "install", "--project", project)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    again = cli("events", "install", "--project", project)
    assert again.returncode == 0 and "unchanged" in again.stdout, again.stdout + again.stderr
    listed = cli("events", "list", "--project", project)
    assert f"{project}: ROI collection saved" in listed.stdout
    assert "active\tImageAssessorEvent" in listed.stdout

    # The annotator's work: a session imported, then an RTSTRUCT saved as an ROI collection.
    with connect(url, xnat_server.user, xnat_server.password) as session:
        [sample] = build_sample_project(session, project, subjects=1)

    job = wait_for_job(http, url, project, "roi-to-mask-roi-collection")
    logs = http.get(f"{url}/xapi/containers/{job['id']}/logs/stderr").text
    assert job["status"] == "Complete", f"{job['status']}: {job.get('message')}\n{logs[-2000:]}"

    deliveries = http.get(f"{url}/xapi/events/delivered",
                          params={"project": project, "include-filter-mismatch": "true"}).json()
    [delivery] = [d for d in deliveries if d["event-type"].endswith("ImageAssessorEvent")]
    assert delivery["container-id"] == str(job["id"])
    assert delivery["trigger"]["xnat-type"] == "icr:roiCollectionData"
    history = cli("events", "history", "--project", project).stdout
    assert f"{sample.roi_collection}\tjob {job['id']}" in history
    on_scan = [d for d in deliveries if d["subscription"]["name"] == on_scans["name"]]
    assert len(on_scan) == 2  # T1w and T2w, both passed the filter
    assert not any(d["status"][-1]["status"] == "OBJECT_FILTER_MISMATCH_HALT" for d in on_scan)

    session_uri = f"{url}/data/experiments/{sample.session_id}"
    assessors = http.get(f"{session_uri}/assessors", params={"format": "json"}).json()
    [roi] = [a for a in assessors["ResultSet"]["Result"] if a["label"] == sample.roi_collection]
    assessor_resources = labels(http, f"{session_uri}/assessors/{roi['ID']}")
    assert LABELMAP_RESOURCE in assessor_resources
    assert int(assessor_resources[LABELMAP_RESOURCE]["file_count"]) > 0

    scans = http.get(f"{session_uri}/scans", params={"format": "json"}).json()
    with_nifti = [s for s in scans["ResultSet"]["Result"]
                  if NIFTI_RESOURCE in labels(http, f"{session_uri}/scans/{s['ID']}")]  # fmt: skip
    assert len(with_nifti) == 1  # only the annotated series
