"""Two input scans of a session arriving in one DICOM import, with the infer subscription on a
two-channel model (T1w + T2w): each scan's DICOM resource is an event and launches a job, and
both jobs find every input in place. The collection is stored once: one job stores it, the other
finds it (at its start, or when its own store is refused) and ends Complete, storing nothing;
neither replaces the other's collection nor fails.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from inference.inference_models import TISSUES, region_model
from server.dicom_samples import write_series, zip_folder

from xnat_ml.cli import main
from xnat_ml.datasets.versions import write_version
from xnat_ml.imaging.ai_collections import ai_collection_label
from xnat_ml.training.project_models import install_model
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
PROJECT = "EVPAIR"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
PAIR_DEFINITION = {
    "criteria": [{"payload": {
        "T1": {"tag": "t1", "SeriesDescription": "/^T1w/"},
        "T2": {"tag": "t2", "SeriesDescription": "/^T2w/"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
    "channels": ["t1", "t2"],
}  # fmt: skip


def pair_model(folder: Path) -> Path:
    """The synthetic region model (tests/inference/inference_models.py) taking two channels,
    T1w and T2w, with the lineage pair-data v1 (PAIR_DEFINITION)."""
    model = region_model(folder)
    shutil.copyfile(TISSUES / "configs" / "train.json", model / "configs" / "train.json")
    inference = json.loads((model / "configs" / "inference.json").read_text())
    inference |= {"dataset_dir": "", "dataset": {}, "evaluator": {}}  # never built by infer
    (model / "configs" / "inference.json").write_text(json.dumps(inference))
    meta = json.loads((model / "configs" / "metadata.json").read_text())
    meta["network_data_format"]["inputs"]["image"] |= {
        "num_channels": 2, "channel_def": {"0": "T1w", "1": "T2w"}}  # fmt: skip
    (model / "configs" / "metadata.json").write_text(json.dumps(meta))
    card = json.loads((model / "model.json").read_text())
    card |= {"name": "pair", "input_channels": ["T1w", "T2w"],
             "dataset": {"name": "pair-data", "version": "1"}}  # fmt: skip
    (model / "model.json").write_text(json.dumps(card))
    return model


@pytest.fixture(scope="module")
def site(xnat_server, install_command, tmp_path_factory):
    """Project EVPAIR with the model `pair` v1 and the infer subscription running it."""
    install_command(json.loads((REPO / "command_json" / "infer.json").read_text()))
    work = tmp_path_factory.mktemp("events-pair")
    url, http = xnat_server.url, xnat_server.session()
    http.put(f"{url}/data/projects/{PROJECT}").raise_for_status()
    with connect(url, xnat_server.user, xnat_server.password) as session:
        write_version(session, PROJECT, "pair-data", {
            "definition.json": json.dumps(PAIR_DEFINITION), "dataset_0.json": "{}",
            "report.json": "{}", "report.md": ""})  # fmt: skip
        assert install_model(session, PROJECT, pair_model(work / "pair"), "pair")[0] == 1
    assert main(["events", "install", "--project", PROJECT, "--only", "infer", "--set",
                 "MODEL=pair:1", "--url", url, "--user", xnat_server.user,
                 "--password", xnat_server.password]) == 0  # fmt: skip
    return xnat_server, work


def test_one_import_of_two_input_scans_stores_one_collection(site):
    server, work = site
    url, http = server.url, server.session()
    first = write_series(work / "dicom" / "t1", patient="PAIR01", number=1, description="T1w",
                         slices=6, size=16)  # fmt: skip
    write_series(work / "dicom" / "t2", patient="PAIR01", study_uid=first["study_uid"],
                 number=2, description="T2w", slices=6, size=16)  # fmt: skip
    answer = http.post(f"{url}/data/services/import", data=zip_folder(work / "dicom"), params={
        "import-handler": "DICOM-zip",
        "dest": f"/archive/projects/{PROJECT}/subjects/PAIR01/experiments/PAIR01_MR"})  # fmt: skip
    assert answer.status_code == 200, answer.text

    deadline = time.monotonic() + 600
    while True:  # the jobs the two DICOM resources' events launched, once both have ended
        delivered = http.get(f"{url}/xapi/projects/{PROJECT}/events/delivered").json()
        ids = [d["container-id"] for d in delivered if d.get("container-id")]
        jobs = [http.get(f"{url}/xapi/containers/{i}").json() for i in ids]
        if len(jobs) >= 2 and all(j["status"] in FINAL for j in jobs):
            break
        assert time.monotonic() < deadline, (delivered, jobs)
        time.sleep(1)
    logs = ["".join(http.get(f"{url}/xapi/containers/{j['id']}/logs/{stream}").text
                    for stream in ("stdout", "stderr")) for j in jobs]  # fmt: skip
    assert len(jobs) == 2, jobs
    assert [j["status"] for j in jobs] == ["Complete", "Complete"], (jobs, logs)
    assert sum("stored SEG collection" in log for log in logs) == 1, logs
    assert sum("nothing to do" in log for log in logs) == 1, logs
    assert not any("replaced SEG collection" in log for log in logs), logs

    label = ai_collection_label("pair", 1, "PAIR01_MR")
    session = f"{url}/data/projects/{PROJECT}/subjects/PAIR01/experiments/PAIR01_MR"
    rows = http.get(f"{session}/assessors", params={"format": "json"}).json()["ResultSet"]["Result"]
    assert [r["label"] for r in rows] == [label], rows
