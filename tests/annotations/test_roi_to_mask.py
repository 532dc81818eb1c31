"""`xnat-ml roi-to-mask` against the embedded server over real HTTP, as a job runs it.

The sample session holds two scans (T1w, T2w); the RTSTRUCT annotates the T1w, a SEG written
here annotates the T2w: each run must find its own scan by the UID inside the file, never by
position. Failures must print one line, exit 1 and leave the archive as it was.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest

from xnat_ml.cli import main
from xnat_ml.imaging.ai_collections import algorithm_name
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect, download_resource, list_rows

PROJECT = "RTM_CLI"
LABELMAP = b"Grey Matter=1\nWhite Matter=2\n"


@dataclass
class Site:
    server: object
    session_id: str
    roi_dir: Path  # the RTSTRUCT resource, as the command's /roi mount holds it
    uids: dict[str, str]  # scan id -> SeriesInstanceUID
    dicom: dict[str, Path]  # scan id -> its downloaded DICOM folder

    def scan_of(self, description: str) -> str:
        with connect(self.server.url, self.server.user, self.server.password) as xs:
            rows = list_rows(xs, f"/data/experiments/{self.session_id}/scans")
        return next(r["ID"] for r in rows if r["type"].startswith(description))

    def nifti_files(self) -> dict[str, list[str]]:
        """scan id -> files of its NIFTI resource (absent: no resource)."""
        http, out = self.server.session(), {}
        for scan in self.uids:
            base = f"{self.server.url}/data/experiments/{self.session_id}/scans/{scan}"
            labels = [r["label"] for r in http.get(f"{base}/resources", params={"format": "json"})
                      .json()["ResultSet"]["Result"]]  # fmt: skip
            if "NIFTI" in labels:
                rows = http.get(f"{base}/resources/NIFTI/files", params={"format": "json"})
                out[scan] = sorted(r["Name"] for r in rows.json()["ResultSet"]["Result"])
        return out

    def image(self, scan: str) -> nibabel.Nifti1Image:
        answer = self.server.session().get(
            f"{self.server.url}/data/experiments/{self.session_id}/scans/{scan}"
            "/resources/NIFTI/files/image.nii.gz"
        )
        answer.raise_for_status()
        return nibabel.Nifti1Image.from_bytes(gzip.decompress(answer.content))


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory) -> Site:
    tmp = tmp_path_factory.mktemp("roi-to-mask")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as xs:
        [built] = build_sample_project(xs, PROJECT, subjects=1)
        session_uri = f"/data/experiments/{built.session_id}"
        [roi] = [a for a in list_rows(xs, f"{session_uri}/assessors")
                 if a["label"] == built.roi_collection]  # fmt: skip
        download_resource(xs, f"{session_uri}/assessors/{roi['ID']}/resources/RTSTRUCT",
                          tmp / "roi")  # fmt: skip
        uids, dicom = {}, {}
        for row in list_rows(xs, f"{session_uri}/scans"):
            dicom[row["ID"]] = tmp / f"scan-{row['ID']}"
            download_resource(xs, f"{session_uri}/scans/{row['ID']}/resources/DICOM",
                              dicom[row["ID"]])  # fmt: skip
            uids[row["ID"]] = load_series(dicom[row["ID"]]).series_uid
    assert len(uids) >= 2, "the sample session must hold several scans"
    xnat_server.session().put(
        f"{xnat_server.url}/data/projects/{PROJECT}/resources/ML_MODELS/files/"
        "maps/region2MaskValueMap.txt", data=LABELMAP, params={"overwrite": "true"},
    ).raise_for_status()  # fmt: skip
    return Site(xnat_server, built.session_id, tmp / "roi", uids, dicom)


@pytest.fixture
def run(site, monkeypatch, capsys):
    """Run the verb in this process with the job's variables (admin); `user` and `password`
    are passed as options, which win over them. (exit code, stdout, stderr)"""

    def go(roi: Path, roi_type: str, out: Path, *more: str, project=PROJECT, user=None,
           password=None):  # fmt: skip
        monkeypatch.setenv("XNAT_HOST", site.server.url)
        monkeypatch.setenv("XNAT_USER", site.server.user)
        monkeypatch.setenv("XNAT_PASS", site.server.password)
        login = ["--user", user, "--password", password] if user else []
        capsys.readouterr()
        code = main(["roi-to-mask", str(roi), "--type", roi_type, "--session", site.session_id,
                     "--project", project, "--out", str(out), *login, *more])  # fmt: skip
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return go


def test_rtstruct_finds_its_scan_among_several_and_uses_the_label_map(site, run, tmp_path):
    t1 = site.scan_of("T1w")
    code, out, err = run(site.roi_dir, "RTSTRUCT", tmp_path / "labels",
                         "--labelmap", "maps/region2MaskValueMap.txt")  # fmt: skip
    assert code == 0, err
    assert f"of scan {t1}" in out
    written = sorted(p.name for p in (tmp_path / "labels").iterdir())
    assert written == ["Grey_Matter.nii.gz", "White_Matter.nii.gz", "labels.json",
                       "labels.nii.gz", "masks.json"]  # fmt: skip
    record = json.loads((tmp_path / "labels" / "masks.json").read_text())
    assert record["origin"] == "human" and "/" not in record["rtstruct"]  # a name, not a path
    niftis = site.nifti_files()
    assert "image.nii.gz" in niftis[t1]
    assert all("image.nii.gz" not in files for scan, files in niftis.items() if scan != t1)
    image, labels = site.image(t1), nibabel.load(tmp_path / "labels" / "labels.nii.gz")
    assert image.shape == labels.shape
    assert np.allclose(image.affine, labels.affine)
    assert set(np.unique(np.asarray(labels.dataobj))) == {0, 1, 2}


def test_missing_label_map_gives_masks_only(site, run, tmp_path):
    code, out, err = run(site.roi_dir, "RTSTRUCT", tmp_path / "labels",
                         "--labelmap", "maps/absent.txt")  # fmt: skip
    assert code == 0, err
    assert "no label map" in out
    written = {p.name for p in (tmp_path / "labels").iterdir()}
    assert written == {"Grey_Matter.nii.gz", "White_Matter.nii.gz", "masks.json"}


def test_seg_annotating_the_second_scan(site, run, tmp_path):
    t2 = site.scan_of("T2w")
    series = load_series(site.dicom[t2])
    labels = np.zeros(series.shape, np.uint8)
    i, j, k = (n // 2 for n in series.shape)
    labels[i - 5 : i + 5, j - 5 : j + 5, k - 1 : k + 2] = 1
    seg_dir = tmp_path / "seg"
    seg_dir.mkdir()
    write_seg(labels, {1: ("Lesion", (255, 0, 0))}, series, seg_dir / "lesion.dcm", manual=True)
    code, out, err = run(seg_dir, "SEG", tmp_path / "labels")  # no --labelmap: masks only
    assert code == 0, err
    assert f"of scan {t2}" in out
    mask = nibabel.load(tmp_path / "labels" / "Lesion.nii.gz")
    assert int(np.asarray(mask.dataobj).sum()) == labels.sum()
    image = site.image(t2)
    assert image.shape == mask.shape and np.allclose(image.affine, mask.affine)
    record = json.loads((tmp_path / "labels" / "masks.json").read_text())
    assert record["origin"] == "human" and record["seg"] == "lesion.dcm"


def test_seg_with_manual_and_automatic_segments_is_recorded_mixed(site, run, tmp_path):
    """An annotator's SEG that kept one of a model's segments untouched: converted (a person
    worked on it), and its record says ``mixed`` for dataset definitions to tell apart."""
    series = load_series(site.dicom[site.scan_of("T2w")])
    labels = np.zeros(series.shape, np.uint8)
    labels[10:20, 10:20, 2:4], labels[20:25, 20:25, 2:4] = 1, 2
    seg = write_seg(labels, {1: ("Lesion", (255, 0, 0)), 2: ("Edema", (0, 255, 0))}, series,
                    tmp_path / "mixed.dcm", manual=True)  # fmt: skip
    ds = pydicom.dcmread(seg)
    ds.SegmentSequence[1].SegmentAlgorithmType = "AUTOMATIC"
    ds.SegmentSequence[1].SegmentAlgorithmName = algorithm_name("lesion-net", 1)
    ds.save_as(seg)
    code, out, err = run(seg, "SEG", tmp_path / "labels")
    assert code == 0, err
    assert json.loads((tmp_path / "labels" / "masks.json").read_text())["origin"] == "mixed"


def test_ai_seg_is_skipped_with_one_line(site, run, tmp_path):
    """A model's SEG (every segment AUTOMATIC) is no annotation: nothing written or uploaded."""
    t2 = site.scan_of("T2w")
    series = load_series(site.dicom[t2])
    labels = np.zeros(series.shape, np.uint8)
    labels[10:20, 10:20, 2:4] = 1
    seg = write_seg(labels, {1: ("Lesion", (255, 0, 0))}, series, tmp_path / "ai.dcm",
                    algorithm_name=algorithm_name("lesion-net", 1))  # fmt: skip
    before = site.nifti_files()
    code, out, err = run(seg, "SEG", tmp_path / "labels", "--labelmap",
                         "maps/region2MaskValueMap.txt")  # fmt: skip
    assert (code, err) == (0, "")
    assert out == f"{seg}: every segment of this SEG is AUTOMATIC (model output, not an " \
                  "annotation); skipped, nothing stored\n"
    assert not (tmp_path / "labels").exists()
    assert site.nifti_files() == before


def _rtstruct_referencing(site: Site, uid: str, where: Path) -> Path:
    [source] = site.roi_dir.iterdir()
    ds = pydicom.dcmread(source)
    for ref in ds.ReferencedFrameOfReferenceSequence:
        for study in ref.RTReferencedStudySequence:
            for series in study.RTReferencedSeriesSequence:
                series.SeriesInstanceUID = uid
    where.mkdir()
    ds.save_as(where / "rt.dcm")
    return where


def test_missing_referenced_series_fails_cleanly(site, run, tmp_path):
    before = site.nifti_files()
    roi = _rtstruct_referencing(site, "1.2.3.4.5.6", tmp_path / "roi")
    code, out, err = run(roi, "RTSTRUCT", tmp_path / "labels", "--labelmap",
                         "maps/region2MaskValueMap.txt")  # fmt: skip
    assert code == 1
    assert err == (f"xnat-ml: error: session {site.session_id}: none of its {len(site.uids)} "
                   "scans holds the referenced series 1.2.3.4.5.6\n")  # fmt: skip
    assert not (tmp_path / "labels").exists()
    assert site.nifti_files() == before


def test_label_map_refused_by_the_server_is_an_error(site, run, tmp_path, xnat_server):
    """Only a missing label map means 'masks only': a refusal (here 403: a project the job's
    user may not read) fails the run, before anything is uploaded."""
    xnat_server.session().put(f"{xnat_server.url}/data/projects/RTM_OTHER").raise_for_status()
    xnat_server.add_user("rtm_member", "rtm-pw", PROJECT, "Member")
    before = site.nifti_files()
    code, _, err = run(site.roi_dir, "RTSTRUCT", tmp_path / "labels", "--labelmap",
                       "region2MaskValueMap.txt", project="RTM_OTHER", user="rtm_member",
                       password="rtm-pw")  # fmt: skip
    assert code == 1
    assert err.startswith("xnat-ml: error: label map region2MaskValueMap.txt of project "
                          "RTM_OTHER: the server answered HTTP 403")  # fmt: skip
    assert err.count("\n") == 1
    assert not (tmp_path / "labels").exists()
    assert site.nifti_files() == before


@pytest.mark.parametrize(
    ("make", "roi_type", "labelmap", "expected"),
    [
        (lambda d: (d / "a.dcm").write_bytes(b"not dicom at all"), "RTSTRUCT", "",
         "not a DICOM file"),
        (lambda d: (d / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 40), "SEG", "",
         "not a segmentation (Modality None)"),
        (lambda d: None, "RTSTRUCT", "", "holds 0 files, expected one"),
        (lambda d: [(d / n).write_bytes(b"x") for n in ("a", "b")], "RTSTRUCT", "",
         "holds 2 files, expected one"),
        ("rtstruct", "SEG", "", "not a segmentation (Modality 'RTSTRUCT')"),
        ("rtstruct", "RTSTRUCT", "../../etc/passwd", "must be a relative path inside ML_MODELS"),
        ("rtstruct", "RTSTRUCT", "/etc/passwd", "must be a relative path inside ML_MODELS"),
    ],
)  # fmt: skip
def test_hostile_inputs_fail_with_one_line(site, run, tmp_path, make, roi_type, labelmap,
                                           expected):  # fmt: skip
    roi = tmp_path / "roi"
    roi.mkdir()
    if make == "rtstruct":
        [source] = site.roi_dir.iterdir()
        (roi / source.name).write_bytes(source.read_bytes())
    else:
        make(roi)
    before = site.nifti_files()
    code, _, err = run(roi, roi_type, tmp_path / "labels", "--labelmap", labelmap)
    assert code == 1
    assert expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "labels").exists()
    assert site.nifti_files() == before
