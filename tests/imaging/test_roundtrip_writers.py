"""Round trips on realistic anatomy (MNI152 tissue maps on synthetic series of several
geometries): mask → SEG → mask is exact, mask → RTSTRUCT → mask keeps Dice ≥ 0.98 per ROI (our
contours make it exact), and the written objects reference the source series correctly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from mni_masks import GEOMETRIES, brain_series, dice, tissue_masks

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.derived import save_atomically
from xnat_ml.imaging.rtstruct import rtstruct_to_masks
from xnat_ml.imaging.rtstruct_write import trace_contours, write_rtstruct
from xnat_ml.imaging.seg import read_seg
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series


@pytest.fixture(scope="module", params=list(GEOMETRIES))
def anatomy(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param.replace(" ", "_"))
    series = brain_series(folder / "series", request.param)
    masks = tissue_masks(series)
    assert all(m.sum() > 500 for m in masks.values())  # the grid really cuts the brain
    return series, masks


def test_mask_to_rtstruct_to_mask(anatomy, tmp_path):
    series, masks = anatomy
    colors = {"grey matter": (128, 128, 128), "white matter": (250, 250, 250)}
    path = write_rtstruct(masks, series, tmp_path / "rois.dcm", colors=colors, label="tissue")
    back = rtstruct_to_masks(path, series).masks()
    assert list(back) == list(masks)
    for name, mask in masks.items():
        assert dice(mask, back[name]) >= 0.98, name
        np.testing.assert_array_equal(back[name].astype(bool), mask, err_msg=name)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_rtstruct_contents_reference_the_series(anatomy, tmp_path):
    series, masks = anatomy
    path = write_rtstruct(
        {"grey matter": masks["grey matter"]},
        series,
        tmp_path / "rois.dcm",
        colors={"grey matter": (10, 20, 30)},
        label="annotator 1",
        roi_generation="MANUAL",
    )
    ds = pydicom.dcmread(path)
    source = pydicom.dcmread(series.files[0], stop_before_pixels=True)
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == pydicom.uid.RTStructureSetStorage
    assert ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID
    assert ds.StructureSetLabel == "annotator 1"
    (ref_for,) = ds.ReferencedFrameOfReferenceSequence
    assert ref_for.FrameOfReferenceUID == series.frame_of_reference_uid
    (rt_series,) = ref_for.RTReferencedStudySequence[0].RTReferencedSeriesSequence
    assert rt_series.SeriesInstanceUID == series.series_uid
    assert [r.ReferencedSOPInstanceUID for r in rt_series.ContourImageSequence] == list(
        series.sop_instance_uids
    )
    (roi,) = ds.StructureSetROISequence
    assert (roi.ROIName, roi.ROIGenerationAlgorithm) == ("grey matter", "MANUAL")
    (contours,) = ds.ROIContourSequence
    assert list(contours.ROIDisplayColor) == [10, 20, 30]
    for item in contours.ContourSequence:
        assert item.ContourGeometricType == "CLOSED_PLANAR"
        points = np.array(item.ContourData, float).reshape(-1, 3)
        assert len(points) == item.NumberOfContourPoints >= 3
        voxels = series.patient_to_voxel(points)
        k = int(round(voxels[0, 2]))
        # On the slice plane, in patient coordinates, and the hint names that very slice.
        np.testing.assert_allclose(voxels[:, 2], k, atol=1e-4)
        uid = item.ContourImageSequence[0].ReferencedSOPInstanceUID
        assert uid == series.sop_instance_uids[k]


def test_mask_to_seg_to_mask_is_exact(anatomy, tmp_path):
    series, masks = anatomy
    labels = np.zeros(series.shape, np.uint8)
    labels[masks["grey matter"]] = 10  # sparse values, as region2MaskValueMap.txt uses
    labels[masks["white matter"]] = 20
    segments = {10: ("grey matter", (128, 128, 128)), 20: ("white matter", (250, 250, 250))}
    segments[30] = ("lesion", (255, 0, 0))  # described, no voxels: still listed
    path = write_seg(labels, segments, series, tmp_path / "seg.dcm", algorithm_name="unet")
    back = read_seg(path, series)
    assert list(back) == ["grey matter", "white matter", "lesion"]
    for name in ("grey matter", "white matter"):
        np.testing.assert_array_equal(back[name], masks[name], err_msg=name)
    assert not back["lesion"].any()
    assert list(tmp_path.iterdir()) == [path]


def test_seg_contents_reference_the_series(anatomy, tmp_path):
    series, masks = anatomy
    labels = masks["brain"].astype(np.uint8)
    path = write_seg(labels, {1: ("brain", (200, 50, 50))}, series, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert ds.FrameOfReferenceUID == series.frame_of_reference_uid
    (ref_series,) = ds.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == series.series_uid
    referenced = {r.ReferencedSOPInstanceUID for r in ref_series.ReferencedInstanceSequence}
    assert referenced <= set(series.sop_instance_uids)
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "brain"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "xnat-ml"
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
    assert len(segment.RecommendedDisplayCIELabValue) == 3
    # Empty slices are kept (the viewer misplaces segments across gaps): one frame per slice.
    assert ds.NumberOfFrames == series.shape[2]


def test_holes_become_separate_contours(tmp_path):
    write_series(tmp_path / "ct", rows=20, columns=24, slices=2, pixel_spacing=(0.6, 0.9))
    series = load_series(tmp_path / "ct")
    ring = np.zeros(series.shape, bool)
    ring[4:20, 3:17, 1] = True
    ring[8:16, 7:13, 1] = False
    ring[11:13, 9:11, 1] = True  # an island in the hole
    contours = trace_contours(ring, series)
    assert [k for k, _ in contours] == [1, 1, 1]
    # Only corners are kept: rectangles traced through edge midpoints have 8 corners.
    assert sorted(len(points) for _, points in contours) == [8, 8, 8]
    path = write_rtstruct({"ring": ring}, series, tmp_path / "ring.dcm")
    back = rtstruct_to_masks(path, series).masks()["ring"]
    np.testing.assert_array_equal(back.astype(bool), ring)


def test_writers_refuse_bad_arguments(tmp_path):
    write_series(tmp_path / "ct", rows=6, columns=8, slices=3)
    series = load_series(tmp_path / "ct")
    good = np.zeros(series.shape, bool)
    good[2:4, 2:4, 1] = True
    out = tmp_path / "out"
    cases = [
        (lambda: write_rtstruct({}, series, out / "a.dcm"), "no ROI masks"),
        (lambda: write_rtstruct({"a": good[:, :, :2]}, series, out / "a.dcm"), "does not match"),
        (lambda: write_rtstruct({"": good}, series, out / "a.dcm"), "empty or over 64"),
        (lambda: write_rtstruct({"a": ~good & False}, series, out / "a.dcm"), "every ROI mask"),
        (
            lambda: write_rtstruct({"a": good}, series, out / "a.dcm", roi_generation="AI"),
            "not one of",
        ),
        (lambda: write_seg(good[:, :, :2], {1: ("a", (1, 1, 1))}, series, out / "s.dcm"), "match"),
        (lambda: write_seg(good.astype(np.uint8), {}, series, out / "s.dcm"), "[1]"),
        (lambda: write_seg(good * 0.5, {1: ("a", (1, 1, 1))}, series, out / "s.dcm"), "integers"),
        (
            lambda: write_seg(-good.astype(np.int8), {1: ("a", (1, 1, 1))}, series, out / "s.dcm"),
            "non-negative",
        ),
        (lambda: write_seg(good * 0, {}, series, out / "s.dcm"), "no segments"),
    ]
    for call, problem in cases:
        with pytest.raises(XnatMlError) as err:
            call()
        assert problem in str(err.value)
    assert not out.exists() or list(out.iterdir()) == []


def test_empty_label_array_still_gives_a_readable_seg(tmp_path):
    write_series(tmp_path / "ct", rows=6, columns=8, slices=3)
    series = load_series(tmp_path / "ct")
    path = write_seg(
        np.zeros(series.shape, np.uint8), {1: ("a", (1, 2, 3))}, series, tmp_path / "s.dcm"
    )
    back = read_seg(path, series)
    assert list(back) == ["a"] and not back["a"].any()


def test_seg_from_wide_label_values(tmp_path):
    """uint16 labels with values beyond 255 keep their segments apart."""
    write_series(tmp_path / "ct", rows=6, columns=8, slices=3)
    series = load_series(tmp_path / "ct")
    labels = np.zeros(series.shape, np.uint16)
    labels[1:3, 1:4, 0] = 300
    labels[4:6, 2:5, 2] = 7
    segments = {300: ("three hundred", (1, 2, 3)), 7: ("seven", (4, 5, 6))}
    back = read_seg(write_seg(labels, segments, series, tmp_path / "s.dcm"), series)
    assert list(back) == ["seven", "three hundred"]  # segment numbers follow label values
    np.testing.assert_array_equal(back["seven"], labels == 7)
    np.testing.assert_array_equal(back["three hundred"], labels == 300)


def test_non_ascii_and_path_like_names_survive_both_writers(tmp_path):
    write_series(tmp_path / "ct", rows=8, columns=8, slices=2)
    series = load_series(tmp_path / "ct")
    mask = np.zeros(series.shape, bool)
    mask[2:5, 2:5, 1] = True
    name = "Leber/../Käse 肝"
    rtstruct = write_rtstruct({name: mask}, series, tmp_path / "rs.dcm")
    assert list(rtstruct_to_masks(rtstruct, series).masks()) == [name]
    seg = write_seg(mask.astype(np.uint8), {1: (name, (1, 2, 3))}, series, tmp_path / "s.dcm")
    assert list(read_seg(seg, series)) == [name]


def test_failed_save_leaves_no_file(tmp_path):
    broken = pydicom.Dataset()  # no file meta: pydicom refuses to write it as a DICOM file
    broken.PatientName = "x"
    with pytest.raises(Exception):  # noqa: B017 - whatever pydicom raises, nothing may remain
        save_atomically(broken, tmp_path / "out" / "x.dcm")
    assert list((tmp_path / "out").iterdir()) == []
