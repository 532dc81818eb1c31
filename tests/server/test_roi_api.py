"""OHIF-style ROI collections over real HTTP: create, list as assessors, fetch, refuse bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pydicom
import pytest
import xnat
from dicom_samples import write_rtstruct, write_seg_header, write_series, zip_folder
from pydicom.uid import generate_uid

from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def imported(xnat_server, project, tmp_path) -> dict:
    """A session imported from one MR series; its ids and the series' UIDs."""
    series = write_series(tmp_path / "mr", slices=2)
    return {**series, "session_id": _import(xnat_server, project, tmp_path / "mr"),
            "project": project, "folder": tmp_path / "mr"}  # fmt: skip


def _import(xnat_server, project: str, folder) -> str:
    """Import a folder of DICOM as a new session; its ID."""
    http = xnat_server.session()
    before = _session_ids(xnat_server, project)
    http.post(f"{xnat_server.url}/data/services/import?import-handler=DICOM-zip"
              f"&dest=/archive/projects/{project}", data=zip_folder(folder)).raise_for_status()
    (new,) = _session_ids(xnat_server, project) - before
    return new


def _session_ids(xnat_server, project: str) -> set[str]:
    rows = xnat_server.session().get(
        f"{xnat_server.url}/data/projects/{project}/experiments?format=json"
    ).json()["ResultSet"]["Result"]
    return {row["ID"] for row in rows}


def _seg(imported, path, description: str = "AI_liver_v1_S1"):
    """A real SEG (xnat-ml's writer) of the imported series: one segment on the first slice."""
    series = load_series(imported["folder"])
    labels = np.zeros(series.shape, np.uint8)
    labels[1:3, 1:3, 0] = 1
    return write_seg(labels, {1: ("Liver", (200, 80, 60))}, series, path,
                     algorithm_name="liver v1", series_description=description)  # fmt: skip


def _roi_url(xnat_server, imported, label: str, kind: str, extra: str = "") -> str:
    return (f"{xnat_server.url}/xapi/roi/projects/{imported['project']}/sessions/"
            f"{imported['session_id']}/collections/{label}?type={kind}{extra}")


def _assessors(xnat_server, imported) -> list[dict]:
    url = (f"{xnat_server.url}/data/experiments/{imported['session_id']}/assessors"
           "?format=json&columns=ID,label,xsiType,collectionType,name,references/seriesUID")
    return xnat_server.session().get(url).json()["ResultSet"]["Result"]


def test_rtstruct_and_seg_collections(xnat_server, imported, tmp_path):
    rtstruct = write_rtstruct(tmp_path / "rt.dcm", imported, label="Reader 1")
    http = xnat_server.session()
    reply = http.put(_roi_url(xnat_server, imported, "ann_rt", "RTSTRUCT", "&overwrite=false"),
                     data=rtstruct.read_bytes(),
                     headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 200, reply.text
    assessor_id = reply.text.strip()
    seg = write_seg_header(tmp_path / "seg.dcm", imported)
    assert http.put(_roi_url(xnat_server, imported, "ann_seg", "SEG"), data=seg.read_bytes()).ok

    rows = {r["label"]: r for r in _assessors(xnat_server, imported)}
    assert rows["ann_rt"]["ID"] == assessor_id
    assert rows["ann_rt"]["xsiType"] == "icr:roiCollectionData"
    assert (rows["ann_rt"]["collectionType"], rows["ann_rt"]["name"]) == ("RTSTRUCT", "Reader 1")
    assert rows["ann_rt"]["references/seriesUID"] == imported["series_uid"]
    assert (rows["ann_seg"]["collectionType"], rows["ann_seg"]["name"]) == ("SEG", "AI liver")

    with xnat.connect(xnat_server.url, user=xnat_server.user,
                      password=xnat_server.password) as session:
        experiment = session.experiments[imported["session_id"]]
        assessor = experiment.assessors[assessor_id]
        assert assessor.__xsi_type__ == "icr:roiCollectionData"
        resource = assessor.resources["RTSTRUCT"]
        (file,) = resource.files.values()
        file.download(tmp_path / "back.dcm", verbose=False)
        assert (tmp_path / "back.dcm").read_bytes() == rtstruct.read_bytes()

    fetched = http.get(_roi_url(xnat_server, imported, "ann_rt", "RTSTRUCT"))
    assert fetched.content == rtstruct.read_bytes()

    # a second upload under the same label is refused unless overwrite=true (422, as the plugin)
    url = _roi_url(xnat_server, imported, "ann_rt", "RTSTRUCT")
    assert http.put(url, data=rtstruct.read_bytes()).status_code == 422
    # a label map made from the old contours must not outlive them
    session_uri = f"{xnat_server.url}/data/experiments/{imported['session_id']}"
    assessor_uri = f"{session_uri}/assessors/{assessor_id}"
    old_map = http.put(f"{assessor_uri}/resources/LABELMAP/files/labels.nii.gz", data=b"old")
    assert old_map.ok
    other = write_rtstruct(tmp_path / "rt2.dcm", imported, label="Reader 2", rois=("Liver",))
    replaced = http.put(_roi_url(xnat_server, imported, "ann_rt", "RTSTRUCT", "&overwrite=true"),
                        data=other.read_bytes())
    assert replaced.ok and replaced.text.strip() == assessor_id
    rows = {r["label"]: r for r in _assessors(xnat_server, imported)}
    assert rows["ann_rt"]["name"] == "Reader 2"
    assert http.get(url).content == other.read_bytes()
    labels = http.get(f"{assessor_uri}/resources", params={"format": "json"}).json()
    assert [r["label"] for r in labels["ResultSet"]["Result"]] == ["RTSTRUCT"]

    delete = http.delete(f"{xnat_server.url}/data/experiments/{imported['session_id']}"
                         f"/assessors/{assessor_id}")
    assert delete.ok
    assert [r["label"] for r in _assessors(xnat_server, imported)] == ["ann_seg"]


def test_nifti_collection_takes_series_from_query(xnat_server, imported, tmp_path):
    import nibabel

    path = tmp_path / "labels.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.eye(4)), path)
    reply = xnat_server.session().put(
        _roi_url(xnat_server, imported, "mask1", "NIFTI", f"&seriesuid={imported['series_uid']}"),
        data=path.read_bytes(),
    )
    assert reply.ok, reply.text
    row = next(r for r in _assessors(xnat_server, imported) if r["label"] == "mask1")
    assert row["references/seriesUID"] == imported["series_uid"]
    files = xnat_server.session().get(
        f"{xnat_server.url}/data/experiments/{imported['session_id']}/assessors/{row['ID']}"
        "/resources/NIFTI/files?format=json").json()["ResultSet"]["Result"]
    assert [f["Name"] for f in files] == ["mask1.nii.gz"]


@pytest.mark.parametrize(
    "kind,make,status",
    [
        ("RTSTRUCT", lambda s, t: s["paths"][0].read_bytes(), 400),  # an MR image
        ("SEG", lambda s, t: write_rtstruct(t / "rt.dcm", s).read_bytes(), 400),  # wrong class
        ("RTSTRUCT", lambda s, t: b"\x00" * 64, 400),
        ("NIFTI", lambda s, t: gzip.compress(b"not nifti"), 400),
        ("AIM", lambda s, t: b"<?xml version='1.0'?><notAim/>", 400),
        ("MEAS", lambda s, t: b"[1, 2", 400),
        ("PNG", lambda s, t: b"\x89PNG", 400),
        ("", lambda s, t: b"x", 400),
    ],
)
def test_invalid_collections_create_nothing(xnat_server, imported, tmp_path, kind, make, status):
    body = make(imported, tmp_path)
    reply = xnat_server.session().put(_roi_url(xnat_server, imported, "bad", kind), data=body)
    assert reply.status_code == status, reply.text
    assert _assessors(xnat_server, imported) == []
    assert not any((xnat_server.data_dir / "staging").iterdir())


def test_unknown_session_label_and_roles(xnat_server, imported, tmp_path):
    http = xnat_server.session()
    rtstruct = write_rtstruct(tmp_path / "rt.dcm", imported).read_bytes()
    missing = _roi_url(xnat_server, dict(imported, session_id="XNAT_E99999"), "x", "RTSTRUCT")
    assert http.put(missing, data=rtstruct).status_code == 404
    bad_label = http.put(_roi_url(xnat_server, imported, "bad%20label", "RTSTRUCT"), data=rtstruct)
    assert bad_label.status_code == 400
    xnat_server.add_user("h2roi", "pw-roi", imported["project"], "Collaborator")
    reader = xnat_server.session("h2roi", "pw-roi")
    url = _roi_url(xnat_server, imported, "x", "RTSTRUCT")
    assert reader.put(url, data=rtstruct).status_code == 403
    assert _assessors(xnat_server, imported) == []


def test_seg_as_the_viewer_saves_it_is_listed_as_a_seg_collection(xnat_server, imported, tmp_path):
    seg = _seg(imported, tmp_path / "seg.dcm")
    reply = xnat_server.session().put(
        _roi_url(xnat_server, imported, "AI_liver_v1_S1", "SEG", "&overwrite=false"),
        data=seg.read_bytes(), headers={"Content-Type": "application/octet-stream"})
    assert reply.status_code == 200, reply.text
    (row,) = _assessors(xnat_server, imported)
    assert row["ID"] == reply.text.strip()
    assert (row["xsiType"], row["collectionType"]) == ("icr:roiCollectionData", "SEG")
    assert (row["name"], row["references/seriesUID"]) == ("AI_liver_v1_S1", imported["series_uid"])


def _other_study(ds):
    ds.StudyInstanceUID = generate_uid()


def _other_series(ds):
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()


def _other_instance(ds):
    frame = ds.PerFrameFunctionalGroupsSequence[1]
    frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = "1.2.3.4"


def _rt_study(ds):
    return ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]


def _rt_other_study(ds):
    ds.StudyInstanceUID = _rt_study(ds).ReferencedSOPInstanceUID = generate_uid()


def _rt_second_study(ds):  # names a second study besides its own
    _rt_study(ds).ReferencedSOPInstanceUID = generate_uid()


def _rt_other_series(ds):
    _rt_study(ds).RTReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()


def _rt_other_contour_image(ds):
    item = pydicom.Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.5"
    _rt_study(ds).RTReferencedSeriesSequence[0].ContourImageSequence = [item]


@pytest.mark.parametrize(
    "kind,change,problem",
    [
        ("SEG", _other_study, "not session"),
        ("SEG", _other_series, "Missing dependencies: series"),
        ("SEG", _other_instance, "Missing dependencies: instance 1.2.3.4"),
        ("RTSTRUCT", _rt_other_study, "not session"),
        ("RTSTRUCT", _rt_second_study, "references 2 studies"),
        ("RTSTRUCT", _rt_other_series, "Missing dependencies: series"),
        ("RTSTRUCT", _rt_other_contour_image, "Missing dependencies: instance 1.2.3.5"),
    ],
)
def test_collection_of_other_images_is_refused(xnat_server, imported, tmp_path, kind, change,
                                               problem):  # fmt: skip
    """What the roi plugin checks: the session's study, its scans' series and instances."""
    if kind == "SEG":
        ds = pydicom.dcmread(_seg(imported, tmp_path / "seg.dcm"))
    else:
        ds = pydicom.dcmread(write_rtstruct(tmp_path / "rt.dcm", imported))
        _rt_study(ds).ReferencedSOPInstanceUID = imported["study_uid"]
    change(ds)
    ds.save_as(tmp_path / "bad.dcm")
    reply = xnat_server.session().put(_roi_url(xnat_server, imported, "bad", kind),
                                      data=(tmp_path / "bad.dcm").read_bytes())  # fmt: skip
    assert reply.status_code == 422, reply.text
    assert problem in reply.text and len(reply.text.strip().splitlines()) == 1, reply.text
    assert _assessors(xnat_server, imported) == []
    assert not any((xnat_server.data_dir / "staging").iterdir())


def test_taken_labels_as_the_plugin_answers(xnat_server, imported, tmp_path):
    """Labels are unique in the project: another session's label is a 409; this session's is a
    422 unless overwrite=true; a refused upload leaves the collection as it was."""
    http = xnat_server.session()
    seg = _seg(imported, tmp_path / "seg.dcm").read_bytes()
    first = http.put(_roi_url(xnat_server, imported, "taken", "SEG"), data=seg)
    assert first.ok, first.text
    again = http.put(_roi_url(xnat_server, imported, "taken", "SEG"), data=seg)
    assert again.status_code == 422 and "overwrite=true" in again.text, again.text

    other_series = write_series(tmp_path / "other", patient="PAT002", slices=2)
    other = {**other_series, "session_id": _import(xnat_server, imported["project"],
                                                   tmp_path / "other"),
             "project": imported["project"], "folder": tmp_path / "other"}  # fmt: skip
    other_seg = _seg(other, tmp_path / "other.dcm").read_bytes()
    for extra in ("", "&overwrite=true"):
        reply = http.put(_roi_url(xnat_server, other, "taken", "SEG", extra), data=other_seg)
        assert reply.status_code == 409 and "of session" in reply.text, reply.text
    assert _assessors(xnat_server, other) == []
    (row,) = _assessors(xnat_server, imported)
    assert row["ID"] == first.text.strip()
    assert http.get(_roi_url(xnat_server, imported, "taken", "SEG")).content == seg


def test_session_built_over_rest_is_checked_from_its_files(xnat_server, project, tmp_path):
    """No import: the session has no study UID and its DICOM files other names, so the study
    and the instances come from the files' headers."""
    http, base = xnat_server.session(), f"{xnat_server.url}/data/projects/{project}"
    series = write_series(tmp_path / "mr", slices=2)
    session = f"{base}/subjects/S9/experiments/S9_MR"
    for url, params in ((f"{base}/subjects/S9", {}),
                        (session, {"xsiType": "xnat:mrSessionData"}),
                        (f"{session}/scans/7", {"xsiType": "xnat:mrScanData",
                                                "UID": series["series_uid"]})):  # fmt: skip
        http.put(url, params=params).raise_for_status()
    for n, path in enumerate(series["paths"]):
        http.put(f"{session}/scans/7/resources/DICOM/files/image{n}.dcm",
                 data=path.read_bytes()).raise_for_status()  # fmt: skip
    (session_id,) = _session_ids(xnat_server, project)
    built = {**series, "session_id": session_id, "project": project, "folder": tmp_path / "mr"}
    seg = _seg(built, tmp_path / "seg.dcm")
    ok = http.put(_roi_url(xnat_server, built, "rest_seg", "SEG"), data=seg.read_bytes())
    assert ok.status_code == 200, ok.text

    ds = pydicom.dcmread(seg)
    _other_instance(ds)
    ds.save_as(tmp_path / "other_instance.dcm")
    ds = pydicom.dcmread(seg)
    _other_study(ds)
    ds.save_as(tmp_path / "other_study.dcm")
    for name, problem in (("other_instance", "Missing dependencies: instance 1.2.3.4"),
                          ("other_study", "not session S9_MR's study " + series["study_uid"])):
        reply = http.put(_roi_url(xnat_server, built, name.replace("_", "-"), "SEG"),
                         data=(tmp_path / f"{name}.dcm").read_bytes())  # fmt: skip
        assert reply.status_code == 422 and problem in reply.text, reply.text
    assert [r["label"] for r in _assessors(xnat_server, built)] == ["rest_seg"]
