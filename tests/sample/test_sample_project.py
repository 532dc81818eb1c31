"""The sample project built on `xnat-ml serve` through REST, by the CLI verb and the library."""

from __future__ import annotations

import subprocess
import sys

import pydicom
import pytest

from xnat_ml.imaging.labelmap import load_labelmap
from xnat_ml.layout import DICOM_RESOURCE, LABELMAP_FILE, MODELS_RESOURCE, ROI_COLLECTION_XSI
from xnat_ml.sample import build_sample_project
from xnat_ml.sample.dicom_series import study_uid
from xnat_ml.sample.subjects import make_subject
from xnat_ml.xnat import connect, download_resource, list_experiments, list_resources, list_rows
from xnat_ml.xnat.uris import experiment_uri, resource_uri

SUBJECTS = 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", "sample-data", *args],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sample_project(xnat_server):
    """Built once by `xnat-ml sample-data` (the verb users run)."""
    project = "SAMPLE_E2E"
    done = _cli("--url", xnat_server.url, "--user", xnat_server.user,
                "--password", xnat_server.password, "--project", project,
                "--subjects", str(SUBJECTS))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"project {project}: {SUBJECTS} subjects" in done.stdout
    return project


@pytest.fixture
def session(xnat_server):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


def test_subjects_sessions_and_scans_with_dicom(sample_project, session):
    sessions = list_experiments(session, sample_project)
    assert len(sessions) == SUBJECTS
    assert {row["xsiType"] for row in sessions} == {"xnat:mrSessionData"}
    assert sorted(row["subject_label"] for row in sessions) == ["sub-01", "sub-02"]
    assert all(row["date"] for row in sessions)
    for row in sessions:
        scans = list_rows(session, f"{experiment_uri(row['ID'])}/scans")
        assert sorted(scan["series_description"] for scan in scans) == ["T1w MPRAGE", "T2w TSE"]
        for scan in scans:
            resources = list_resources(session, scan["URI"])
            [dicom] = [r for r in resources if r["label"] == DICOM_RESOURCE]
            assert int(dicom["file_count"]) >= 30


def test_each_session_has_an_rtstruct_roi_collection_on_its_t1w(sample_project, session, tmp_path):
    for row in list_experiments(session, sample_project):
        uri = experiment_uri(row["ID"])
        [collection] = list_rows(session, f"{uri}/assessors")
        assert collection["xsiType"] == ROI_COLLECTION_XSI
        assert collection["label"] == f"{row['label']}_tissues"
        fields = session.get_json(collection["URI"])["items"][0]["data_fields"]
        assert fields["collectionType"] == "RTSTRUCT"
        [rtstruct_path] = download_resource(
            session, resource_uri(collection["URI"], "RTSTRUCT"), tmp_path / row["label"]
        )
        rtstruct = pydicom.dcmread(rtstruct_path)
        # Reproducible like the images: the same project and seed give the same UIDs.
        subject = make_subject(int(row["subject_label"].removeprefix("sub-")) - 1, 0)
        assert subject.label == row["subject_label"]
        assert rtstruct.SOPInstanceUID == study_uid(sample_project, subject, "rtstruct instance")
        assert rtstruct.SeriesInstanceUID == study_uid(sample_project, subject, "rtstruct series")
        assert [roi.ROIName for roi in rtstruct.StructureSetROISequence] == [
            "Grey Matter", "White Matter",
        ]  # fmt: skip
        assert rtstruct.ROIContourSequence[0].ContourSequence  # traced, not empty
        [t1w] = [s for s in list_rows(session, f"{uri}/scans") if s["ID"] == "2"]
        [t1w_file] = download_resource(session, resource_uri(t1w["URI"], DICOM_RESOURCE),
                                       tmp_path / f"{row['label']}-t1w")[:1]  # fmt: skip
        series_uid = pydicom.dcmread(t1w_file, stop_before_pixels=True).SeriesInstanceUID
        assert fields["references/seriesUID"] == series_uid
        referenced = rtstruct.ReferencedFrameOfReferenceSequence[0]
        study = referenced.RTReferencedStudySequence[0]
        assert study.RTReferencedSeriesSequence[0].SeriesInstanceUID == series_uid


def test_the_project_has_the_label_map_roi_to_mask_reads(sample_project, session, tmp_path):
    files = f"/data/projects/{sample_project}/resources/{MODELS_RESOURCE}"
    [path] = download_resource(session, files, tmp_path / "models")
    assert path.name == LABELMAP_FILE
    labels = load_labelmap(path).labels
    assert [(label.name, label.value) for label in labels] == [
        ("Grey Matter", 1), ("White Matter", 2),
    ]  # fmt: skip


def test_rerun_changes_nothing(sample_project, session):
    before = sorted((r["ID"], r["label"]) for r in list_experiments(session, sample_project))
    again = build_sample_project(session, sample_project, SUBJECTS)
    assert [s.created for s in again] == [False] * SUBJECTS
    assert sorted((s.session_id, s.session_label) for s in again) == before
    after = sorted((r["ID"], r["label"]) for r in list_experiments(session, sample_project))
    assert after == before


def test_cli_reports_a_bad_password_in_one_line(xnat_server):
    done = _cli("--url", xnat_server.url, "--user", "admin", "--password", "wrong")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"xnat-ml: error: XNAT server {xnat_server.url}: login failed for user admin"
    ]
