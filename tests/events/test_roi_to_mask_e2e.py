"""End to end on the embedded server, local backend: an annotator saves an RTSTRUCT through
/xapi/roi and, with no other action, the image NIfTI and the label map appear as resources,
through the subscription installed from event_handlers/ by `xnat-ml events install`."""

from __future__ import annotations

import time

import numpy as np
import pytest

from xnat_ml.imaging.ai_collections import ai_collection_label, algorithm_name
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series
from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect, download_resource, list_rows, upload_roi_collection

pytestmark = pytest.mark.slow


def wait_for_jobs(http, url: str, project: str, wrapper: str, count: int = 1,
                  timeout: float = 240.0) -> list[dict]:  # fmt: skip
    """The project's `count` jobs of `wrapper`, once all have finished, oldest first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = http.get(f"{url}/xapi/containers", params={"project": project}).json()
        mine = [j for j in jobs if j["wrapper-name"] == wrapper]
        if len(mine) >= count and all(
            j["status"] in ("Complete", "Failed", "Failed (Upload)", "Killed") for j in mine
        ):
            assert len(mine) == count, mine
            return sorted(mine, key=lambda j: int(j["id"]))
        time.sleep(0.5)
    raise AssertionError(f"not {count} finished {wrapper} jobs in {project} after {timeout} s: "
                         f"{jobs}")


def wait_for_job(http, url: str, project: str, wrapper: str, timeout: float = 240.0) -> dict:
    """The project's one job of `wrapper`, once it has finished."""
    [job] = wait_for_jobs(http, url, project, wrapper, 1, timeout)
    return job


def labels(http, uri: str) -> dict[str, dict]:
    rows = http.get(f"{uri}/resources", params={"format": "json"}).json()["ResultSet"]["Result"]
    return {row["label"]: row for row in rows}


def test_saving_an_rtstruct_makes_nifti_and_label_map(
    xnat_server, project, cli, probe_wrapper, enable_in
):
    url, http = xnat_server.url, xnat_server.session()
    enable_in(project, probe_wrapper)
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


def test_a_seg_on_the_second_scan_converts_that_scan(xnat_server, project, cli, tmp_path):
    """Several scans in the session, the annotation on the second: the event-launched job finds
    it by the series UID inside the SEG (nothing in the launch names a scan)."""
    url, http = xnat_server.url, xnat_server.session()
    assert cli("events", "install", "--project", project).returncode == 0
    with connect(url, xnat_server.user, xnat_server.password) as session:
        [sample] = build_sample_project(session, project, subjects=1)
        scans_uri = f"/data/experiments/{sample.session_id}/scans"
        scans = {row["type"].split()[0]: row["ID"] for row in list_rows(session, scans_uri)}
        t2 = scans["T2w"]
        download_resource(session, f"{scans_uri}/{t2}/resources/DICOM", tmp_path / "t2w")
        series = load_series(tmp_path / "t2w")
        lesion = np.zeros(series.shape, np.uint8)
        lesion[20:40, 20:40, 5:8] = 1
        seg = write_seg(lesion, {1: ("Lesion", (255, 0, 0))}, series, tmp_path / "seg.dcm",
                        manual=True)  # fmt: skip  (as OHIF saves an annotator's work)
        upload_roi_collection(session, project, sample.session_id, "lesion_seg", seg, "SEG")
        # a model's SEG of the same scan: its job completes and stores nothing
        ai_label = ai_collection_label("lesion-net", 1, sample.session_label)
        ai_seg = write_seg(lesion, {1: ("Lesion", (255, 0, 0))}, series, tmp_path / "ai.dcm",
                           algorithm_name=algorithm_name("lesion-net", 1),
                           series_description=ai_label)  # fmt: skip
        upload_roi_collection(session, project, sample.session_id, ai_label, ai_seg, "SEG")

    jobs = wait_for_jobs(http, url, project, "roi-to-mask-roi-collection", count=3)
    for job in jobs:
        logs = http.get(f"{url}/xapi/containers/{job['id']}/logs/stderr").text
        assert job["status"] == "Complete", f"{job['status']}: {job.get('message')}\n{logs}"

    session_uri = f"{url}/data/experiments/{sample.session_id}"
    assessors = http.get(f"{session_uri}/assessors", params={"format": "json"}).json()
    [seg_roi] = [a for a in assessors["ResultSet"]["Result"] if a["label"] == "lesion_seg"]
    masks = http.get(f"{session_uri}/assessors/{seg_roi['ID']}/resources/{LABELMAP_RESOURCE}"
                     "/files", params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
    assert {"Lesion.nii.gz", "masks.json"} <= {row["Name"] for row in masks}
    [ai_roi] = [a for a in assessors["ResultSet"]["Result"] if a["label"] == ai_label]
    assert LABELMAP_RESOURCE not in labels(http, f"{session_uri}/assessors/{ai_roi['ID']}")
    with_image = {
        scan: [row["Name"] for row in http.get(
            f"{session_uri}/scans/{scan}/resources/{NIFTI_RESOURCE}/files",
            params={"format": "json"}).json()["ResultSet"]["Result"]]
        for scan in scans.values()
        if NIFTI_RESOURCE in labels(http, f"{session_uri}/scans/{scan}")
    }  # fmt: skip
    # the RTSTRUCT of the sample annotates the T1w, the SEG the T2w: each got its own image
    assert with_image == {scans["T1w"]: ["image.nii.gz"], t2: ["image.nii.gz"]}
