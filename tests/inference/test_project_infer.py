"""`xnat-ml infer` on the embedded server: a model version of the project on a sample session
(DICOM only), the result stored as an AI SEG ROI collection with its LABELMAP, as a Member;
a Collaborator's --no-store run; reruns; bad inputs; the Container Service command.

The model is the shipped sample-tissues-cpu template with a small network and random weights
(tests/inference/inference_models.py): the mechanics, not the accuracy, are under test here.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from inference_models import DEFINITION, REGION_LABELS, region_model, tissues_model_with_lineage

from xnat_ml.imaging.ai_collections import ai_collection_label
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series
from xnat_ml.sample.project import build_sample_project
from xnat_ml.training.project_models import install_model
from xnat_ml.xnat import connect, download_resource

REPO = Path(__file__).resolve().parents[2]
PROJECT = "INFER1"
DCIODVFY = shutil.which("dciodvfy") or str(Path(sys.executable).with_name("dciodvfy"))
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


class Site:
    """The server, the project, its one sample session, and users of each role."""

    def __init__(self, server, session_id: str, session_label: str) -> None:
        self.server, self.url = server, server.url
        self.http = server.session()
        self.session_id, self.session_label = session_id, session_label

    def cli(self, *args: str, user: str = "member", cache: Path | None = None):
        password = self.server.password if user == self.server.user else f"{user}-pw"
        extra = ["--cache", str(cache)] if cache else []
        return subprocess.run(
            [sys.executable, "-m", "xnat_ml", *args, *extra, "--url", self.url,
             "--user", user, "--password", password],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def infer(self, *args: str, user: str = "member", cache: Path | None = None):
        return self.cli("infer", "--project", PROJECT, "--session", self.session_id, *args,
                        user=user, cache=cache)  # fmt: skip

    def assessors(self) -> dict[str, dict]:
        rows = self.http.get(f"{self.url}/data/experiments/{self.session_id}/assessors",
                             params={"format": "json"}).json()["ResultSet"]["Result"]  # fmt: skip
        return {r["label"]: r for r in rows}

    def files(self, uri: str) -> list[str]:
        answer = self.http.get(f"{self.url}{uri}/files", params={"format": "json"})
        if answer.status_code == 404:
            return []
        return sorted(r["Name"] for r in answer.json()["ResultSet"]["Result"])

    def get(self, uri: str) -> bytes:
        answer = self.http.get(f"{self.url}{uri}")
        answer.raise_for_status()
        return answer.content


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory) -> Site:
    """One sample session (T1w + T2w DICOM, no NIfTI), the model `tissues`: v1 and v3 with a
    dataset lineage (ML_DATASETS tissues-data v1: definition.json), v2 without one; the
    synthetic region model `regions` v1 (overlapping channels, painted; no Invertd, so its
    output is on its own RAS grid); users of each role."""
    work = tmp_path_factory.mktemp("infer-site")
    http = xnat_server.session()
    http.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    for role in ("Member", "Collaborator"):
        xnat_server.add_user(role.lower(), f"{role.lower()}-pw", PROJECT, role)
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        [built] = build_sample_project(session, PROJECT, subjects=1)
        model = tissues_model_with_lineage(session, PROJECT, work / "model")
        card = json.loads((model / "model.json").read_text())
        assert install_model(session, PROJECT, model, "tissues")[0] == 1
        card["dataset"] = None
        (model / "model.json").write_text(json.dumps(card))
        assert install_model(session, PROJECT, model, "tissues")[0] == 2
        card["dataset"] = {"name": "tissues-data", "version": "1"}
        card["task"] = "a third version, for the refused SEG"
        (model / "model.json").write_text(json.dumps(card))
        assert install_model(session, PROJECT, model, "tissues")[0] == 3
        regions = region_model(work / "regions")
        shutil.copyfile(model / "configs" / "train.json", regions / "configs" / "train.json")
        inference = json.loads((regions / "configs" / "inference.json").read_text())
        inference |= {"dataset_dir": "", "dataset": {}, "evaluator": {}}  # never built by infer
        (regions / "configs" / "inference.json").write_text(json.dumps(inference))
        assert install_model(session, PROJECT, regions, "regions")[0] == 1
    return Site(xnat_server, built.session_id, built.session_label)


@pytest.fixture(scope="module")
def stored(site: Site, tmp_path_factory):
    """The first run as a Member: the CLI's answer and the stored collection's row."""
    cache = tmp_path_factory.mktemp("infer-cache")
    result = site.infer("--model", "tissues:1", cache=cache)
    assert result.returncode == 0, result.stderr
    label = ai_collection_label("tissues", 1, site.session_label)
    return result, site.assessors()[label], cache


def test_stored_seg_is_listed_under_the_session(site: Site, stored):
    result, row, _ = stored
    label = ai_collection_label("tissues", 1, site.session_label)
    assert f"stored SEG collection {label}" in result.stdout
    assert "T1w: scan" in result.stdout
    assert row["xsiType"] == "icr:roiCollectionData"
    collection = site.http.get(f"{site.url}/data/experiments/{site.session_id}/assessors/"
                               f"{row['ID']}", params={"format": "json"}).json()  # fmt: skip
    fields = collection["items"][0]["data_fields"]
    assert fields["collectionType"] == "SEG"
    resources = f"/data/experiments/{site.session_id}/assessors/{row['ID']}/resources"
    assert len(site.files(f"{resources}/SEG")) == 1
    assert {"labels.nii.gz", "labels.json", "masks.json"} <= set(
        site.files(f"{resources}/LABELMAP"))
    # the record dataset definitions read for Origin/Prefer (docs/datasets.md)
    record = site.http.get(f"{site.url}{resources}/LABELMAP/files/masks.json")
    assert record.json()["origin"] == "ai"


@pytest.fixture(scope="module")
def downloaded(site: Site, stored, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the SEG file, the T1w series folder, the stored labels.nii.gz)."""
    _, row, _ = stored
    folder = tmp_path_factory.mktemp("infer-downloaded")
    assessor = f"/data/experiments/{site.session_id}/assessors/{row['ID']}"
    with connect(site.url, site.server.user, site.server.password) as session:
        [seg] = download_resource(session, f"{assessor}/resources/SEG", folder / "seg")
        scans = session.get_json(f"/data/experiments/{site.session_id}/scans")
        [t1] = [r["ID"] for r in scans["ResultSet"]["Result"] if r["type"].startswith("T1w")]
        download_resource(session, f"/data/experiments/{site.session_id}/scans/{t1}/resources/"
                          "DICOM", folder / "t1w")  # fmt: skip
    labels = folder / "labels.nii.gz"
    labels.write_bytes(site.get(f"{assessor}/resources/LABELMAP/files/labels.nii.gz"))
    return seg, folder / "t1w", labels


@pytest.mark.skipif(not Path(DCIODVFY).exists(), reason="dicom3tools (dev extra) not installed")
def test_dciodvfy_finds_no_errors(downloaded):
    seg, *_ = downloaded
    result = subprocess.run([DCIODVFY, "-new", str(seg)], capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    errors = [line for line in (result.stdout + result.stderr).splitlines()
              if line.startswith("Error")]  # fmt: skip
    assert errors == [], result.stdout + result.stderr


def test_highdicom_reads_the_models_segments_as_automatic(site: Site, downloaded):
    seg_path, series_dir, _ = downloaded
    seg = hd.seg.segread(seg_path)
    source = pydicom.dcmread(load_series(series_dir).files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.SeriesDescription == ai_collection_label("tissues", 1, site.session_label)
    described = [seg.get_segment_description(n) for n in seg.segment_numbers]
    assert [d.segment_label for d in described] == ["Grey Matter", "White Matter"]
    assert {d.algorithm_type.value for d in described} == {"AUTOMATIC"}
    assert {d.algorithm_identification[0].AlgorithmName for d in described} == {"tissues v1"}


def test_convert_seg_equals_the_stored_labelmap(site: Site, downloaded, tmp_path: Path):
    seg, series_dir, stored_labels = downloaded
    labelmap = tmp_path / "map.txt"
    labelmap.write_text("Grey Matter=1\nWhite Matter=2\n")
    out = tmp_path / "converted"
    result = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "convert", "seg", str(seg), "--series",
         str(series_dir), "--out", str(out), "--labelmap", str(labelmap)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    converted, stored = nib.load(out / "labels.nii.gz"), nib.load(stored_labels)
    assert converted.shape == stored.shape
    assert np.allclose(converted.affine, stored.affine, atol=1e-3)
    assert np.array_equal(np.asarray(converted.dataobj), np.asarray(stored.dataobj))


def test_rerun_replaces_its_own_collection(site: Site, stored):
    _, first, cache = stored
    # the cached model is checked again: a changed file there is not run, the version is re-pulled
    [cached] = [p for p in (cache / "models").glob("*/configs/inference.json")]
    original = cached.read_bytes()
    cached.write_bytes(original.replace(b"{", b'{"payload": "$print(1)", ', 1))
    again = site.infer("--model", "tissues:1", cache=cache)
    assert again.returncode == 0, again.stderr
    assert "configs/inference.json differs from its digest" in again.stderr
    assert cached.read_bytes() == original
    assert "replaced SEG collection" in again.stdout
    label = ai_collection_label("tissues", 1, site.session_label)
    rows = [r for r in site.assessors().values() if r["label"] == label]
    assert [r["ID"] for r in rows] == [first["ID"]]
    resources = f"/data/experiments/{site.session_id}/assessors/{first['ID']}/resources"
    assert len(site.files(f"{resources}/SEG")) == 1
    assert "labels.nii.gz" in site.files(f"{resources}/LABELMAP")


def test_a_human_collection_of_that_label_is_never_replaced(site: Site, tmp_path: Path):
    label = ai_collection_label("tissues", 2, site.session_label)
    with connect(site.url, site.server.user, site.server.password) as session:
        scans = session.get_json(f"/data/experiments/{site.session_id}/scans")
        [t1] = [r["ID"] for r in scans["ResultSet"]["Result"] if r["type"].startswith("T1w")]
        download_resource(session, f"/data/experiments/{site.session_id}/scans/{t1}/resources/"
                          "DICOM", tmp_path / "t1w")  # fmt: skip
    series = load_series(tmp_path / "t1w")
    labels = np.zeros(series.shape, np.uint8)
    labels[10:20, 10:20, 5:8] = 1
    human = write_seg(labels, {1: ("Grey Matter", (1, 2, 3))}, series, tmp_path / "human.dcm",
                      manual=True, series_description=label)  # fmt: skip
    answer = site.http.put(
        f"{site.url}/xapi/roi/projects/{PROJECT}/sessions/{site.session_id}/collections/{label}",
        params={"type": "SEG"}, data=human.read_bytes())  # fmt: skip
    assert answer.status_code == 200, answer.text
    before = site.get(f"/xapi/roi/projects/{PROJECT}/sessions/{site.session_id}/collections/"
                      f"{label}")  # fmt: skip
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(DEFINITION))
    result = site.infer("--model", "tissues:2", "--definition", str(definition))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"xnat-ml: error: ROI collection {label} of session "), line
    assert "never replaces a human collection" in line
    assert site.get(f"/xapi/roi/projects/{PROJECT}/sessions/{site.session_id}/collections/"
                    f"{label}") == before  # fmt: skip


def test_collaborator_runs_without_storing(site: Site, tmp_path: Path):
    before = set(site.assessors())
    out = tmp_path / "result"
    result = site.infer("--model", "tissues", "--no-store", "--to", str(out),
                        user="collaborator", cache=tmp_path / "cache")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "nothing stored" in result.stdout
    assert (out / "seg.dcm").is_file() and (out / "labelmap" / "labels.nii.gz").is_file()
    assert set(site.assessors()) == before
    refused = site.infer("--model", "tissues:1", user="collaborator")
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"xnat-ml: error: project {PROJECT}: infer (storing its SEG collection) needs the "
        "Member role (you are Collaborator)")
    assert set(site.assessors()) == before


def test_a_run_times_its_phases(site: Site, tmp_path: Path, caplog):
    """The phases the inference benchmark sets apart, each timed and logged at DEBUG."""
    from xnat_ml.inference import project_infer

    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(DEFINITION))
    caplog.set_level("DEBUG", logger=project_infer.__name__)
    with connect(site.url, "collaborator", "collaborator-pw") as session:
        done = project_infer.infer_session(session, PROJECT, site.session_id, "regions",
                                           definition=definition, store=False,
                                           to=tmp_path / "out", cache=tmp_path / "c")  # fmt: skip
    assert list(done.timings) == ["checks", "pull", "download", "conversion", "model", "result",
                                  "store"]  # fmt: skip
    assert all(seconds > 0 for seconds in done.timings.values()), done.timings
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("infer phase")]
    assert len(logged) == 8 and "infer phase model: " in " ".join(logged)  # checks twice


def _one_line_error(site: Site, *args: str, after_the_model: bool = False) -> str:
    """The error line of a failed run that stored nothing; a run that failed only after the
    model ran has the libraries' log lines before it."""
    before = set(site.assessors())
    result = site.infer(*args)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert (after_the_model or len(lines) == 1), result.stderr
    assert lines[-1].startswith("xnat-ml: error: "), result.stderr
    assert set(site.assessors()) == before
    return lines[-1].removeprefix("xnat-ml: error: ")


def test_bad_inputs_are_one_line_and_store_nothing(site: Site, tmp_path: Path):
    assert _one_line_error(site, "--model", "tissues:9") == (
        f"model tissues: no version v9 in project {PROJECT} (v1, v2, v3)")
    assert _one_line_error(site, "--model", "nosuch").startswith("model nosuch: not in project")
    without = _one_line_error(site, "--model", "tissues:2")
    assert without.startswith("model tissues v2: its card names no dataset")
    assert "--definition FILE" in without
    flair = tmp_path / "flair.json"
    flair.write_text(json.dumps({"criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "FLAIR"}}}]}))  # fmt: skip
    assert _one_line_error(site, "--model", "tissues:2", "--definition", str(flair)) == (
        f"session {site.session_id}: no scan for input channel T1w (SeriesDescription FLAIR)")


def test_a_seg_the_server_refuses_leaves_no_collection(site: Site):
    """The collection's label is taken on another session of the project: the server refuses
    the SEG (409, as the plugin does) and nothing of the run stays."""
    label = ai_collection_label("tissues", 3, site.session_label)
    other = f"{site.url}/data/projects/{PROJECT}/subjects/other/experiments/other_MR1"
    site.http.put(f"{site.url}/data/projects/{PROJECT}/subjects/other").raise_for_status()
    site.http.put(other, params={"xsiType": "xnat:mrSessionData"}).raise_for_status()
    site.http.put(f"{other}/assessors/{label}",
                  params={"xsiType": "icr:roiCollectionData"}).raise_for_status()  # fmt: skip
    line = _one_line_error(site, "--model", "tissues:3", after_the_model=True)
    assert line.startswith(f"ROI collection {label} of session {site.session_id}"), line
    assert "taken" in line, line
    assert label not in site.assessors()


def test_a_failed_labelmap_upload(site: Site, tmp_path: Path, monkeypatch):
    """The fault after the SEG went in: its LABELMAP upload fails. An Owner's run removes the
    collection; a Member may not delete, is told so in one line, and a rerun completes it."""
    from xnat_ml.errors import XnatMlError
    from xnat_ml.inference import project_infer

    def broken(*_args, **_kwargs):
        raise XnatMlError("XNAT resource LABELMAP: connection lost")

    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(DEFINITION))
    label = ai_collection_label("regions", 1, site.session_label)

    def run(user: str, password: str) -> None:
        with connect(site.url, user, password) as session:
            project_infer.infer_session(session, PROJECT, site.session_id, "regions",
                                        definition=definition, cache=tmp_path / "c")  # fmt: skip

    with monkeypatch.context() as patched:
        patched.setattr(project_infer, "upload_directory", broken)
        with pytest.raises(XnatMlError, match="connection lost"):
            run(site.server.user, site.server.password)
        assert label not in site.assessors()
        with pytest.raises(XnatMlError, match="you may not delete the collection; rerun infer"):
            run("member", "member-pw")
    row = site.assessors()[label]
    assessor = f"/data/experiments/{site.session_id}/assessors/{row['ID']}/resources"
    assert site.files(f"{assessor}/LABELMAP") == []
    run("member", "member-pw")
    assert site.assessors()[label]["ID"] == row["ID"]
    assert "labels.nii.gz" in site.files(f"{assessor}/LABELMAP")


def test_a_region_model_is_stored_as_an_exclusive_seg_on_the_source_grid(site, tmp_path):
    """Overlapping region channels painted by the card's rule; the model's RAS output brought
    back to the (oblique, LPS) source grid, which the log says."""
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(DEFINITION))
    result = site.infer("--model", "regions", "--definition", str(definition))
    assert result.returncode == 0, result.stderr
    assert "resampled the prediction" in result.stderr
    row = site.assessors()[ai_collection_label("regions", 1, site.session_label)]
    assessor = f"/data/experiments/{site.session_id}/assessors/{row['ID']}"
    seg = tmp_path / "seg.dcm"
    seg.write_bytes(site.get(f"{assessor}/resources/SEG/files/"
                             f"{site.files(f'{assessor}/resources/SEG')[0]}"))  # fmt: skip
    read = hd.seg.segread(seg)
    names = [read.get_segment_description(n).segment_label for n in read.segment_numbers]
    assert names == [REGION_LABELS[v] for v in ("1", "2", "4")]
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(site.get(
        f"{assessor}/resources/LABELMAP/files/labels.nii.gz")))  # fmt: skip
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 4}


def _install_command(site: Site) -> int:
    """command_json/infer.json installed (once) and enabled site-wide and in the project."""
    data = json.loads((REPO / "command_json" / "infer.json").read_text())
    answer = site.http.post(f"{site.url}/xapi/commands", json=data)
    assert answer.status_code in (201, 409), answer.text
    [listed] = site.http.get(f"{site.url}/xapi/commands",
                             params={"name": "infer", "version": data["version"]}).json()
    wrapper = {w["name"]: w["id"] for w in listed["xnat"]}["infer-session"]
    for scope in ("", f"/projects/{PROJECT}"):
        site.http.put(f"{site.url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
    return wrapper


def test_the_infer_command_on_the_local_backend(site: Site):
    wrapper = _install_command(site)
    member = site.server.session("member", "member-pw")
    label = ai_collection_label("tissues", 1, site.session_label)
    if label in site.assessors():  # an earlier test's: gone first, so the job makes its own
        first_id = site.assessors()[label]["ID"]
        site.http.delete(f"{site.url}/data/experiments/{site.session_id}/assessors/{first_id}",
                         params={"removeFiles": "true"}).raise_for_status()  # fmt: skip
    assert label not in site.assessors()
    launched = member.post(
        f"{site.url}/xapi/projects/{PROJECT}/wrappers/{wrapper}/root/session/launch",
        json={"session": site.session_id, "MODEL": "tissues:1"})  # fmt: skip
    assert launched.status_code == 200, launched.text
    job_id = launched.json()["id"]
    deadline = time.monotonic() + 600
    while (job := site.http.get(f"{site.url}/xapi/containers/{job_id}").json())["status"] \
            not in FINAL:  # fmt: skip
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    logs = site.http.get(f"{site.url}/xapi/containers/{job_id}/logs/stderr").text
    assert job["status"] == "Complete", (job, logs)
    row = site.assessors()[label]
    files = site.files(f"/data/experiments/{site.session_id}/assessors/{row['ID']}/resources/"
                       "LABELMAP")  # fmt: skip
    assert "labels.nii.gz" in files
    # its XNAT workflow followed it to the end, and its record says what it stored
    workflow = site.http.get(f"{site.url}/xapi/workflows/{job['workflow-id']}").json()
    done = f"infer: stored SEG collection {label}"
    assert (workflow["status"], workflow["stepDescription"]) == ("Complete", done), workflow
    assert workflow["percentageComplete"] == "100" and job["message"] == done


def test_a_batch_runs_infer_over_sessions(site: Site):
    """`xnat-ml batch run --command infer`: a job per selected session, each storing its
    collection; a session without a T1w scan fails alone."""
    _install_command(site)
    label = ai_collection_label("tissues", 3, site.session_label)
    other = f"{site.url}/data/projects/{PROJECT}/subjects/other/experiments/other_MR1"
    site.http.put(f"{site.url}/data/projects/{PROJECT}/subjects/other").raise_for_status()
    site.http.put(other, params={"xsiType": "xnat:mrSessionData"}).raise_for_status()
    if label in site.assessors():
        site.http.delete(f"{site.url}/data/experiments/{site.session_id}/assessors/"
                         f"{site.assessors()[label]['ID']}").raise_for_status()  # fmt: skip
    site.http.delete(f"{other}/assessors/{label}")  # the label an earlier test took there
    result = site.cli("batch", "run", "--project", PROJECT, "--command", "infer", "--ids",
                      site.session_id, "other_MR1", "--input", "MODEL=tissues:3")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = [int(word) for line in result.stdout.splitlines() if "job " in line
            for word in line.split("job ", 1)[1].split()[:1] if word.isdigit()]  # fmt: skip
    assert len(jobs) == 2, result.stdout
    deadline, finished = time.monotonic() + 600, {}
    while len(finished) < len(jobs):
        assert time.monotonic() < deadline, finished
        for job_id in jobs:
            job = site.http.get(f"{site.url}/xapi/containers/{job_id}").json()
            if job["status"] in FINAL:
                finished[job_id] = job
        time.sleep(0.5)
    states = sorted(job["status"] for job in finished.values())
    assert states == ["Complete", "Failed"], finished
    assert label in site.assessors()
