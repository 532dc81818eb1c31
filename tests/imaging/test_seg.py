"""DICOM SEG → masks: segmentation types, geometric placement, and refusals of SEGs that do not
belong to the series (or are not SEGs at all)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.seg import read_seg
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import load_series

OBLIQUE_IOP = (0.8, 0.6, 0.0, 0.0, 0.0, -1.0)  # coronal-ish, rotated about the vertical axis


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A non-square oblique series written with shuffled names and instance numbers, a label
    array with two overlapping-free segments, and a BINARY SEG of it."""
    folder = tmp_path_factory.mktemp("seg")
    write_series(
        folder / "ct",
        rows=12,
        columns=18,
        slices=6,
        pixel_spacing=(0.7, 1.1),
        slice_spacing=2.0,
        orientation=OBLIQUE_IOP,
        shuffle_names=True,
        instance_numbers="random",
    )
    series = load_series(folder / "ct")
    labels = np.zeros(series.shape, np.uint8)
    labels[2:15, 1:9, 1:5] = 1
    labels[5:9, 3:6, 2:4] = 2
    seg = write_seg(
        labels, {1: ("liver", (255, 0, 0)), 2: ("tumour", (0, 255, 0))}, series, folder / "seg.dcm"
    )
    return series, labels, seg


def headers(series):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]


def description(number, label):
    return hd.seg.SegmentDescription(number, label, codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")


def build(series, array, seg_type, labels, path, **kwargs):
    """A SEG made by highdicom directly: array is (slices, rows, columns[, segments])."""
    seg = hd.seg.Segmentation(
        headers(series),
        array,
        seg_type,
        [description(n, label) for n, label in enumerate(labels, start=1)],
        generate_uid(),
        1,
        generate_uid(),
        1,
        "test",
        "test",
        "1",
        "1",
        **kwargs,
    )
    seg.save_as(path)
    return path


def edited(case, tmp_path, change):
    """The case's SEG with `change(dataset)` applied, saved under tmp_path."""
    ds = pydicom.dcmread(case[2])
    change(ds)
    path = tmp_path / "edited.dcm"
    ds.save_as(path)
    return path


def test_binary_seg_back_in_the_series_grid(case):
    series, labels, path = case
    masks = read_seg(path, series)
    assert list(masks) == ["liver", "tumour"]
    for value, name in ((1, "liver"), (2, "tumour")):
        assert masks[name].dtype == bool and masks[name].shape == series.shape
        np.testing.assert_array_equal(masks[name], labels == value)


def test_fractional_is_thresholded_at_one_half(case, tmp_path):
    series = case[0]
    k, rows, cols = series.shape[2], series.rows, series.columns
    array = np.zeros((k, rows, cols, 2), np.float32)
    array[1:4, 2:8, 3:12, 0] = 0.7
    array[2, 2:8, 3:7, 1] = 0.45
    array[2, 2:8, 7:12, 1] = 0.5
    path = build(series, array, "FRACTIONAL", ["soft", "edge"], tmp_path / "frac.dcm")
    masks = read_seg(path, series)
    np.testing.assert_array_equal(masks["soft"], (array[..., 0] >= 0.5).transpose(2, 1, 0))
    np.testing.assert_array_equal(masks["edge"], (array[..., 1] >= 0.5).transpose(2, 1, 0))
    assert masks["edge"].sum() == 6 * 5


def test_labelmap_seg(case, tmp_path):
    series, labels, _ = case
    path = build(
        series, labels.transpose(2, 1, 0), "LABELMAP", ["liver", "tumour"], tmp_path / "lm.dcm"
    )
    masks = read_seg(path, series)
    np.testing.assert_array_equal(masks["liver"], labels == 1)
    np.testing.assert_array_equal(masks["tumour"], labels == 2)


def test_duplicate_and_missing_segment_labels_stay_apart(case, tmp_path):
    series = case[0]
    array = np.zeros((series.shape[2], series.rows, series.columns, 3), np.uint8)
    array[1, 1:3, 1:3, 0] = array[2, 1:3, 1:3, 1] = array[3, 1:3, 1:3, 2] = 1
    path = build(series, array, "BINARY", ["organ", "organ", " "], tmp_path / "dup.dcm")
    masks = read_seg(path, series)
    assert list(masks) == ["organ", "organ_2", "segment_3"]
    assert [int(np.flatnonzero(m.any(axis=(0, 1)))[0]) for m in masks.values()] == [1, 2, 3]


def test_sparse_seg_without_slice_spacing_falls_back_to_references(case, tmp_path):
    """Frames on slices 1 and 4 only, no SpacingBetweenSlices: highdicom infers a stack three
    times coarser than the series and cannot match it; the (checked) references place them."""
    series = case[0]
    labels = np.zeros(series.shape, np.uint8)
    labels[3:9, 2:7, [1, 4]] = 1
    path = build(series, labels.transpose(2, 1, 0), "BINARY", ["sparse"], tmp_path / "sparse.dcm",
                 omit_empty_frames=True)  # other writers leave empty frames out
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == 2
    del ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SpacingBetweenSlices
    ds.save_as(path)
    np.testing.assert_array_equal(read_seg(path, series)["sparse"], labels == 1)


def drop_positions(ds):
    for group in ds.PerFrameFunctionalGroupsSequence:
        del group.PlanePositionSequence


def set_first_reference(uid):
    def change(ds):
        source = ds.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
        source.SourceImageSequence[0].ReferencedSOPInstanceUID = uid

    return change


def shift_first_frame(ds):
    position = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    position.ImagePositionPatient = [float(v) + 0.4 for v in position.ImagePositionPatient]


def other_spacing(ds):
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [0.7, 1.2]


def other_orientation(ds):
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
    orientation.ImageOrientationPatient = [0.6, 0.8, 0, 0, 0, -1]


def other_for(ds):
    ds.FrameOfReferenceUID = generate_uid()


def other_series(ds):
    ds.ReferencedSeriesSequence[0].SeriesInstanceUID = generate_uid()


def no_for(ds):
    del ds.FrameOfReferenceUID


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (set_first_reference(generate_uid()), "frames reference 1 instance(s) missing from series"),
        (shift_first_frame, "frame 1 lies off the slices of series"),
        (other_spacing, "frame 1 pixel spacing"),
        (other_orientation, "frame 1 orientation differs"),
        (other_for, "frame of reference"),
        (no_for, "has no frame of reference"),
        (other_series, "references series"),
        (drop_positions, "malformed segmentation"),
    ],
)
def test_seg_that_does_not_belong_to_the_series(case, tmp_path, change, problem):
    with pytest.raises(XnatMlError) as err:
        read_seg(edited(case, tmp_path, change), case[0])
    assert problem in str(err.value)
    assert "edited.dcm" in str(err.value)


def test_frame_reference_disagreeing_with_its_position(case, tmp_path):
    series = case[0]
    first = pydicom.dcmread(case[2]).PerFrameFunctionalGroupsSequence[0]
    position = first.PlanePositionSequence[0].ImagePositionPatient
    on = int(round(series.patient_to_voxel(np.array(position, float))[0, 2]))
    other = 4 if on != 4 else 1
    path = edited(case, tmp_path, set_first_reference(series.sop_instance_uids[other]))
    with pytest.raises(
        XnatMlError, match=f"frame 1 references slice {other} .* lies on slice {on}"
    ):
        read_seg(path, series)


def test_seg_of_another_grid(case, tmp_path):
    series = case[0]
    folder = tmp_path / "small"
    write_series(
        folder,
        rows=6,
        columns=6,
        slices=6,
        series_uid=series.series_uid,
        frame_of_reference_uid=series.frame_of_reference_uid,
    )
    small = load_series(folder)
    with pytest.raises(XnatMlError, match="frames are 12x18 pixels"):
        read_seg(case[2], small)


def test_not_a_seg(case, tmp_path):
    series, _, path = case
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"this is not DICOM at all" * 10)
    with pytest.raises(XnatMlError, match="not a DICOM file"):
        read_seg(garbage, series)
    with pytest.raises(XnatMlError, match=r"not a segmentation \(Modality 'CT'\)"):
        read_seg(series.files[0], series)
    with pytest.raises(XnatMlError, match="cannot be read"):
        read_seg(tmp_path / "missing.dcm", series)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(XnatMlError, match="SEG .*empty.dcm"):
        read_seg(empty, series)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_seg(case, tmp_path, fraction):
    series, _, path = case
    data = path.read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(XnatMlError, match="cut.dcm"):
        read_seg(cut, series)


def test_hostile_segment_data(case, tmp_path):
    def garbled_pixels(ds):
        ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]

    def no_segments(ds):
        del ds.SegmentSequence

    for change in (garbled_pixels, no_segments):
        with pytest.raises(XnatMlError, match="edited.dcm"):
            read_seg(edited(case, tmp_path, change), case[0])
