"""The datasets XNAT layer on the embedded server: bulk resolve, every exclusion reason made on
the server, versions in ML_DATASETS, fetch with its cache, and the `xnat-ml dataset` verbs."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xnat_ml.datasets.fetch import fetch_dataset
from xnat_ml.datasets.project_build import BuildRefused, build_in_project
from xnat_ml.datasets.resolver import list_sessions
from xnat_ml.datasets.versions import list_versions
from xnat_ml.errors import XnatMlError
from xnat_ml.sample.synthetic import SynthRoi, SynthScan, add_session, nifti_bytes
from xnat_ml.xnat import connect

DEFINITION = {
    "criteria": [{"payload": {
        "Images": {"tag": "image", "SeriesDescription": "T1w"},
        "Labels": {"tag": "label", "Source": "roiCollection"}}}],
    "labelmap": "ML_MODELS/region2MaskValueMap.txt",
    "split": {"training": 60, "validation": 20, "testing": 20, "seed": 3},
}  # fmt: skip
LABELS = np.zeros((4, 4, 4), "uint8")
LABELS[1, 1, 1], LABELS[2, 2, 2] = 1, 2


def good(index: int) -> tuple[list[SynthScan], list[SynthRoi]]:
    uid = f"1.2.3.{index}"
    scans = [SynthScan("1", "T1w", f"{uid}.1", nifti_bytes()),
             SynthScan("2", "T2w", f"{uid}.2", nifti_bytes())]  # fmt: skip
    return scans, [SynthRoi(f"R{index}", f"{uid}.1", nifti_bytes(LABELS))]


def add_good(session, project: str, index: int) -> None:
    add_session(session, project, f"SUB{index:03d}", f"SUB{index:03d}_MR", *good(index))


def build(xnat, project, definition=DEFINITION, **kwargs):
    return build_in_project(xnat, project, json.dumps(definition), "brain", **kwargs)


def reasons(done) -> dict[str, list[str]]:
    return {row["session"]: [r["code"] for r in row["reasons"]]
            for row in done.build.report["sessions"]}  # fmt: skip


def test_every_exclusion_reason_made_on_the_server(xnat, labelled):
    project = labelled
    for i in range(3):
        add_good(xnat, project, i)
    scans, rois = good(10)
    add_session(xnat, project, "NONIFTI", "NONIFTI_MR",
                [SynthScan("1", "T1w", "9.1", None), scans[1]], good(11)[1])  # fmt: skip
    add_session(xnat, project, "TWO", "TWO_MR",
                [scans[0], SynthScan("3", "T1w", "9.3", nifti_bytes())], good(12)[1])  # fmt: skip
    outside = LABELS.copy()
    outside[0, 0, 0] = 7
    add_session(xnat, project, "OUTSIDE", "OUTSIDE_MR", scans,
                [SynthRoi("R_OUT", rois[0].series_uid, nifti_bytes(outside))])  # fmt: skip
    add_session(xnat, project, "EMPTY", "EMPTY_MR", scans,
                [SynthRoi("R_EMPTY", rois[0].series_uid, nifti_bytes(0 * LABELS))])  # fmt: skip
    add_session(xnat, project, "GRID", "GRID_MR", scans,
                [SynthRoi("R_GRID", rois[0].series_uid, nifti_bytes(LABELS[:3]))])  # fmt: skip
    add_session(xnat, project, "WRONGREF", "WRONGREF_MR", scans,
                [SynthRoi("R_REF", scans[1].uid, nifti_bytes(LABELS))])  # fmt: skip
    done = build(xnat, project)
    got = reasons(done)
    assert got["NONIFTI_MR"] == ["no-match"]
    assert got["TWO_MR"] == ["several-matches"]
    assert got["OUTSIDE_MR"] == ["labels-outside-map"]
    assert got["EMPTY_MR"] == ["empty-label"]
    assert got["GRID_MR"] == ["grid-mismatch"]
    assert got["WRONGREF_MR"] == ["wrong-reference"]
    assert [got[f"SUB{i:03d}_MR"] for i in range(3)] == [[], [], []]
    assert done.version.number == 1
    assert done.build.report["summary"]["excludedBy"]["no-match"] == 1


def test_unreadable_image_header(xnat, labelled):
    project = labelled
    add_good(xnat, project, 0)
    scans, rois = good(1)
    broken = SynthScan("1", "T1w", scans[0].uid, b"\x1f\x8b broken gzip" * 10)
    add_session(xnat, project, "BAD", "BAD_MR", [broken], rois)
    assert reasons(build(xnat, project))["BAD_MR"] == ["unreadable"]


def test_bulk_resolve_needs_a_few_requests_whatever_the_sessions(xnat, labelled):
    for i in range(12):
        add_good(xnat, labelled, i)
    calls = []
    hook = lambda response, *a, **k: calls.append(response.url)  # noqa: E731
    xnat.interface.hooks["response"].append(hook)
    try:
        sessions = list_sessions(xnat, labelled)
    finally:
        xnat.interface.hooks["response"].remove(hook)
    assert len(sessions) == 12 and len(calls) == 6, calls
    assert all(len(s.roi_collections) == 1 and len(s.scans) == 2 for s in sessions)


def test_versions_previous_placement_and_no_change(xnat, labelled):
    project = labelled
    for i in range(10):
        add_good(xnat, project, i)
    first = build(xnat, project)
    assert first.version.number == 1
    again = build(xnat, project)
    assert again.unchanged and again.latest.number == 1
    placed = {r["subject"]: r["split"] for r in first.build.report["sessions"]}
    for i in range(10, 13):  # 30% more subjects
        add_good(xnat, project, i)
    second = build(xnat, project)
    assert second.version.number == 2
    now = {r["subject"]: r["split"] for r in second.build.report["sessions"]}
    assert {s: now[s] for s in placed} == placed
    assert [v.number for v in list_versions(xnat, project)["brain"]] == [1, 2]
    assert build(xnat, project, dry_run=True).version is None


def test_strict_and_empty_builds_store_nothing(xnat, labelled, project):
    with pytest.raises(XnatMlError, match="holds no image session"):
        build(xnat, project)
    add_session(xnat, project, "ONLY", "ONLY_MR", [SynthScan("1", "T2w", "1.1", None)])
    with pytest.raises(BuildRefused, match="no session qualifies"):
        build(xnat, project)
    add_good(xnat, project, 0)
    with pytest.raises(BuildRefused, match="--strict"):
        build(xnat, project, strict=True)
    assert list_versions(xnat, project) == {}


def test_user_without_access_gets_one_clear_error(xnat_server, xnat, labelled):
    add_good(xnat, labelled, 0)
    xnat_server.add_user("dsoutsider", "secret-pw-1")
    with connect(xnat_server.url, "dsoutsider", "secret-pw-1") as other:
        with pytest.raises(XnatMlError, match=f"project {labelled}: cannot be read"):
            build(other, labelled)


def test_fetch_caches_checks_and_recovers_from_a_missing_file(xnat, labelled, tmp_path):
    project = labelled
    for i in range(3):
        add_good(xnat, project, i)
    build(xnat, project)
    cache = tmp_path / "cache"
    first = fetch_dataset(xnat, project, "brain", tmp_path / "a", cache=cache, progress=False)
    assert first.files == 6 and first.downloaded == 2  # two distinct contents
    second = fetch_dataset(xnat, project, "brain", tmp_path / "b", cache=cache, progress=False)
    assert second.downloaded == 0
    doc = json.loads(second.datalist.read_text())
    for item in doc["training"] + doc["validation"] + doc["testing"]:
        assert (second.datalist.parent / item["image"]).is_file()
    # a label file removed after the build, with an empty cache: a clear error, no cache entry
    label_uri = doc["training"][0]["label"].removeprefix("data")
    xnat.delete(f"/data{label_uri}")
    empty = tmp_path / "cache2"
    with pytest.raises(XnatMlError, match="no longer in the archive"):
        fetch_dataset(xnat, project, "brain", tmp_path / "c", cache=empty, progress=False)
    assert not any(p.is_file() for p in empty.rglob("*"))
    xnat.put(f"/data{label_uri}", data=nifti_bytes(LABELS), query={"overwrite": "true"},
             headers={"Content-Type": "application/octet-stream"})  # fmt: skip
    retry = fetch_dataset(xnat, project, "brain", tmp_path / "c", cache=empty, progress=False)
    assert retry.files == 6


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", "dataset", *args, "--url", server.url,
         "--user", server.user, "--password", server.password],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_cli_build_list_show_fetch_and_a_broken_definition(xnat_server, xnat, labelled, tmp_path):
    for i in range(3):
        add_good(xnat, labelled, i)
    definition = tmp_path / "brain.json"
    definition.write_text(json.dumps(DEFINITION))
    done = _cli(xnat_server, "build", "--project", labelled, "--definition", str(definition),
                "--name", "brain")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ML_DATASETS/brain/v1: written (3 sessions in "
                                        "(3 subjects), 0 out)")  # fmt: skip
    # 3 subjects at 60/20/20: training 2, validation 1, testing none; built, with a warning
    assert done.stderr == ("xnat-ml: warning: dataset brain: no subject in split testing "
                           "(3 subjects in all); add subjects or change the definition's split\n")
    definition.write_text(json.dumps({**DEFINITION, "split": {"training": 80, "validation": 10,
                                                              "testing": 10, "seed": 3}}))
    lopsided = _cli(xnat_server, "build", "--project", labelled, "--definition",
                    str(definition), "--name", "brain", "--dry-run")  # fmt: skip
    assert lopsided.returncode == 0 and lopsided.stderr == (
        "xnat-ml: warning: dataset brain: no subject in split validation, testing (3 subjects "
        "in all); add subjects or change the definition's split\n"), lopsided.stderr
    listed = _cli(xnat_server, "list", "--project", labelled)
    assert listed.stdout.strip() == "brain: v1"
    shown = _cli(xnat_server, "show", "brain", "--project", labelled)
    assert "| SUB000_MR | SUB000 | yes |" in shown.stdout
    assert "Changes since" not in shown.stdout  # a first version
    add_good(xnat, labelled, 3)  # v2: one more session; the others keep their splits
    definition.write_text(json.dumps(DEFINITION))
    again = _cli(xnat_server, "build", "--project", labelled, "--definition", str(definition),
                 "--name", "brain")  # fmt: skip
    assert again.returncode == 0 and "ML_DATASETS/brain/v2: written" in again.stdout
    shown = _cli(xnat_server, "show", "brain", "--project", labelled)
    report, changes = shown.stdout.split("## Changes since v1\n\n")
    assert "| SUB003_MR | SUB003 | yes |" in report
    assert changes.startswith("1 session(s) in, 0 out, 0 moved")
    [added] = [line for line in changes.splitlines() if line.startswith("| SUB003_MR")]
    assert added.startswith("| SUB003_MR | SUB003 | not in | ")
    fetched = _cli(xnat_server, "fetch", "brain", "--project", labelled, "--to",
                   str(tmp_path / "out"), "--cache", str(tmp_path / "cache"))  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    from monai.data import load_decathlon_datalist

    items = load_decathlon_datalist(str(tmp_path / "out/dataset_0.json"), True, "training")
    assert items and all(p.endswith(".nii.gz") for i in items for p in (i["image"], i["label"]))
    definition.write_text('{"criteria": [')
    broken = _cli(xnat_server, "build", "--project", labelled, "--definition",
                  str(definition), "--name", "brain")  # fmt: skip
    assert broken.returncode == 1
    assert broken.stderr.count("\n") == 1 and "invalid JSON" in broken.stderr
    backreference = {"criteria": [{"payload": {"Images": {"SeriesDescription": ["/(a)\\1/"]}}}]}
    for text, problem in [("[" * 100_000, "JSON nested too deeply"),
                          (json.dumps(backreference), "are not supported (matching must take")]:
        definition.write_text(text)
        refused = _cli(xnat_server, "build", "--project", labelled, "--definition",
                       str(definition), "--name", "brain")  # fmt: skip
        assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
        assert problem in refused.stderr


def test_server_listings_the_resolver_reads(xnat, project):
    add_good(xnat, project, 0)
    rows = xnat.get_json("/data/experiments", query={
        "project": project, "xsiType": "xnat:mrSessionData",
        "columns": "ID,label,xnat:mrScanData/ID,xnat:mrScanData/type",
    })["ResultSet"]["Result"]  # fmt: skip
    assert [(r["label"], r["xnat:mrScanData/ID"], r["xnat:mrScanData/type"]) for r in rows] == [
        ("SUB000_MR", "1", "T1w"), ("SUB000_MR", "2", "T2w")]  # fmt: skip
    [roi] = xnat.get_json("/data/experiments", query={
        "project": project, "xsiType": "icr:roiCollectionData",
        "columns": "ID,imageSession_ID,icr:roiCollectionData/references/seriesUID",
    })["ResultSet"]["Result"]  # fmt: skip
    assert roi["imageSession_ID"] == rows[0]["ID"]
    assert roi["icr:roiCollectionData/references/seriesUID"] == "1.2.3.0.1"
    wide = f"/data/projects/{project}/experiments/ALL/scans/ALL/files"
    files = xnat.get_json(wide)["ResultSet"]["Result"]
    assert sorted(f["URI"].split("/scans/")[1] for f in files) == [
        "1/resources/NIFTI/files/image.nii.gz", "2/resources/NIFTI/files/image.nii.gz"]  # fmt: skip
