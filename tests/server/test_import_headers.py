"""Reading an import's DICOM headers (no server): grouping, labels, and junk set aside."""

from __future__ import annotations

from pathlib import Path

import pytest
from dicom_samples import write_rtstruct, write_seg_header, write_series

from xnat_ml.server.formats.dicom_headers import label_from, read_folder
from xnat_ml.server.formats.roi_content import RoiFileError, file_suffix, read_collection


def test_groups_by_study_and_series_and_skips_junk(tmp_path: Path) -> None:
    t1 = write_series(tmp_path / "a", number=3, description="T1", slices=3)
    write_series(tmp_path / "b", study_uid=t1["study_uid"], number=4, description="T2", slices=2)
    other = write_series(tmp_path / "c", patient="PAT002", modality="CT", slices=1)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "a" / "dup.dcm").write_bytes(t1["paths"][0].read_bytes())

    content = read_folder(tmp_path)

    assert set(content.studies) == {t1["study_uid"], other["study_uid"]}
    study = content.studies[t1["study_uid"]]
    assert (study.patient_id, study.date, study.time, study.modality) == (
        "PAT001", "2024-01-31", "10:15:00", "MR")
    assert sorted((s.number, s.description, len(s.instances)) for s in study.series.values()) == [
        ("3", "T1", 3), ("4", "T2", 2)]
    assert content.studies[other["study_uid"]].modality == "CT"
    assert set(content.skipped) == {"notes.txt", "empty.dcm", "a/slice000.dcm"}
    assert content.skipped["a/slice000.dcm"].startswith("duplicate")  # a/dup.dcm sorts first
    assert content.instance_count == 6


def test_file_without_uids_is_skipped(tmp_path: Path) -> None:
    write_series(tmp_path, slices=1)
    from pydicom import dcmread

    path = next(tmp_path.glob("*.dcm"))
    ds = dcmread(path)
    del ds.SeriesInstanceUID
    ds.save_as(tmp_path / "nouid.dcm")
    content = read_folder(tmp_path)
    assert "nouid.dcm" in content.skipped
    assert content.instance_count == 1


@pytest.mark.parametrize(
    "raw,label", [("PAT^001 x", "PAT_001_x"), ("../..", ""), ("ok-1_a", "ok-1_a")]
)
def test_label_from(raw: str, label: str) -> None:
    assert label_from(raw) == label


def test_reads_rtstruct_and_seg(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s")
    rt = read_collection(write_rtstruct(tmp_path / "rt.dcm", series), "RTSTRUCT")
    assert (rt.name, rt.series_uids, rt.roi_names) == (
        "Annotator1", [series["series_uid"]], ["Liver", "Tumour"])
    seg = read_collection(write_seg_header(tmp_path / "seg.dcm", series), "SEG")
    assert (seg.name, seg.series_uids) == ("AI liver", [series["series_uid"]])
    assert seg.roi_names == ["Liver"]


def test_refuses_wrong_type_and_junk(tmp_path: Path) -> None:
    series = write_series(tmp_path / "s")
    with pytest.raises(RoiFileError, match="SOP class"):
        read_collection(series["paths"][0], "RTSTRUCT")  # an MR image is not an RTSTRUCT
    with pytest.raises(RoiFileError, match="SOP class"):
        read_collection(write_rtstruct(tmp_path / "rt.dcm", series), "SEG")
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\x00" * 10)
    for kind in ("RTSTRUCT", "SEG", "AIM", "MEAS"):
        with pytest.raises(RoiFileError):
            read_collection(junk, kind)
    with pytest.raises(RoiFileError, match="not one of"):
        read_collection(junk, "PNG")
    assert file_suffix(junk, "NIFTI") == ".nii"
