"""RTSTRUCT → masks: voxel-exact fills on awkward grids, contour semantics, hostile input."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_factory import (
    Contour,
    polygon_on_slice,
    rectangle_on_slice,
    write_rtstruct,
    write_series,
)
from skimage.measure import points_in_poly

from xnat_ml.cli import main
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.filenames import safe_stems
from xnat_ml.imaging.rtstruct import rasterise, rtstruct_to_masks
from xnat_ml.imaging.series import load_series

OBLIQUE_IOP = (0.8660254, 0.5, 0.0, -0.1710101, 0.2961981, -0.9396926)


@pytest.fixture
def ct(tmp_path):
    """A non-square, anisotropic, oblique series with shuffled files and reversed numbers."""
    return write_series(
        tmp_path / "ct",
        rows=18,
        columns=25,
        slices=7,
        pixel_spacing=(0.9, 1.4),
        slice_spacing=2.5,
        orientation=OBLIQUE_IOP,
        origin=(12.0, -40.0, 7.5),
        shuffle_names=True,
        instance_numbers="reverse",
    )


def convert(rtstruct, series_dir, out, *extra):
    return main(["convert", "rtstruct", str(rtstruct), "--series", str(series_dir), "--out",
                 str(out), *extra])  # fmt: skip


def test_rectangle_lands_on_exact_voxels_without_transposition(ct, tmp_path):
    # Contour through voxel centres: columns 3..10, rows 2..5 on slice 4 (closure keeps edges).
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, {"box": [rectangle_on_slice(ct, 4, 3, 2, 10, 5)]})
    out = tmp_path / "out"
    assert convert(rs, ct.folder, out) == 0
    mask = nib.load(out / "box.nii.gz")
    data = np.asarray(mask.dataobj)
    expected = np.zeros((25, 18, 7), np.uint8)
    expected[3:11, 2:6, 4] = 1
    np.testing.assert_array_equal(data, expected)
    assert mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, load_series(ct.folder).affine)
    index = json.loads((out / "masks.json").read_text())
    assert index["files"] == {"box": "box.nii.gz"}
    assert index["rois"][0]["voxels"] == 32


def test_holes_stay_holes_and_overlaps_xor(ct, tmp_path):
    outer = rectangle_on_slice(ct, 2, 1, 1, 20, 15)
    inner = rectangle_on_slice(ct, 2, 5.5, 4.5, 10.5, 9.5)  # a hole: voxels 6..10 x 5..9
    a = rectangle_on_slice(ct, 5, 0.5, 0.5, 6.5, 6.5)
    b = rectangle_on_slice(ct, 5, 3.5, 3.5, 9.5, 9.5)  # overlaps a on 4..6 x 4..6
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, {"ring": [outer, inner], "pair": [a, b]})
    result = rtstruct_to_masks(rs, load_series(ct.folder))
    ring, pair = result.masks()["ring"], result.masks()["pair"]
    expected = np.zeros((25, 18, 7), np.uint8)
    expected[1:21, 1:16, 2] = 1
    expected[6:11, 5:10, 2] = 0
    np.testing.assert_array_equal(ring, expected)
    expected[:] = 0
    expected[1:7, 1:7, 5] = 1
    expected[4:10, 4:10, 5] ^= 1
    np.testing.assert_array_equal(pair, expected)


def test_fill_agrees_with_even_odd_point_in_polygon_on_random_polygons():
    rng = np.random.default_rng(7)
    shape = (40, 30, 3)
    planes = [(k, rng.uniform(-5, 45, size=(int(rng.integers(3, 12)), 2))) for k in (0, 1, 1, 2)]
    mask = rasterise(planes, shape)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    centres = np.column_stack([ii.ravel(), jj.ravel()]).astype(float)
    for k in range(3):
        parity = np.zeros(centres.shape[0], bool)
        for kk, poly in planes:
            if (
                kk == k
            ):  # self-intersecting polygons: points_in_poly is the crossing (even-odd) test
                parity ^= points_in_poly(centres, poly)
        np.testing.assert_array_equal(mask[:, :, k].ravel().astype(bool), parity)


def test_geometry_places_contours_and_hints_are_only_hints(ct, tmp_path):
    series = load_series(ct.folder)
    square = rectangle_on_slice(ct, 3, 2, 2, 6, 6)
    rois = {
        "no_hint": [square],
        "wrong_hint": [Contour(square, referenced_sop_uid=ct.sop_instance_uids[0])],
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois, contour_image_hint=False)
    result = rtstruct_to_masks(rs, series)
    masks = result.masks()
    np.testing.assert_array_equal(masks["no_hint"], masks["wrong_hint"])
    assert np.flatnonzero(masks["no_hint"].any(axis=(0, 1))).tolist() == [3]
    assert result.rois[1].counts["hint_mismatch"] == 1
    assert any("ContourImageSequence" in w for w in result.warnings)


def test_off_plane_point_and_open_contours_are_counted_not_drawn(ct, tmp_path):
    on = rectangle_on_slice(ct, 1, 2, 2, 6, 6)
    between = polygon_on_slice(ct, 0, [(2, 2), (6, 2), (6, 6)]) + 0.5 * 2.5 * ct.normal
    beyond = polygon_on_slice(ct, 6, [(2, 2), (6, 2), (6, 6)]) + 3 * 2.5 * ct.normal
    tilted = np.array([ct.lps(2, 2, 1), ct.lps(6, 2, 2), ct.lps(6, 6, 3)])
    rois = {
        "mixed": [
            on,
            between,
            beyond,
            tilted,
            Contour(ct.lps(3, 3, 2)[None], geometric_type="POINT"),
            Contour(on, geometric_type="OPEN_PLANAR"),
        ]
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    result = rtstruct_to_masks(rs, load_series(ct.folder))
    roi = result.rois[0]
    assert roi.contours_used == 1
    assert dict(roi.counts) == {"off_plane": 2, "not_parallel": 1, "point": 1, "open": 1}
    assert roi.voxels == 25
    report = result.report()["rois"][0]
    assert report["off_plane"] == 2 and report["point"] == 1


def test_contours_beyond_the_image_edge_are_clipped_or_counted(ct, tmp_path):
    rois = {
        "edge": [rectangle_on_slice(ct, 2, -6, -3, 4, 5), rectangle_on_slice(ct, 3, 40, 2, 50, 5)]
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    result = rtstruct_to_masks(rs, load_series(ct.folder))
    expected = np.zeros((25, 18, 7), np.uint8)
    expected[0:5, 0:6, 2] = 1
    np.testing.assert_array_equal(result.masks()["edge"], expected)
    assert dict(result.rois[0].counts) == {"clipped": 1, "outside": 1}


def test_safe_file_names_never_leave_the_output_folder(ct, tmp_path):
    names = ["../../evil", "a/b", "..", "labels", "Leber ä", "A/B", "\u202eexe.gz", "x" * 300]
    square = rectangle_on_slice(ct, 1, 2, 2, 4, 4)
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, {n: [square] for n in names})
    out = tmp_path / "deep" / "out"
    assert convert(rs, ct.folder, out) == 0
    written = sorted(p.name for p in out.iterdir())
    assert all((out / name).resolve().parent == out.resolve() for name in written)
    index = json.loads((out / "masks.json").read_text())
    assert set(index["files"]) == set(names)
    assert len(set(index["files"].values())) == len(names)
    assert index["files"]["../../evil"] == "evil.nii.gz"
    assert index["files"]["labels"] == "labels_2.nii.gz"
    assert index["files"]["Leber ä"] == "Leber_a.nii.gz"
    assert not list(tmp_path.glob("deep/*.partial*")) and not (tmp_path / "evil.nii.gz").exists()
    assert safe_stems(["a/b", "A_B", ".hidden", "_", "con"]) == ["a_b", "A_B_2", "hidden", "roi",
                                                                 "con"]  # fmt: skip


def test_labelmap_writes_composite_labels(ct, tmp_path):
    rois = {
        "Liver_1": [rectangle_on_slice(ct, 2, 1, 1, 8, 8)],
        "tumour": [rectangle_on_slice(ct, 2, 4, 4, 6, 6)],
        "other": [rectangle_on_slice(ct, 3, 1, 1, 3, 3)],
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    labelmap = tmp_path / "map.json"
    labelmap.write_text(json.dumps({"labels": [
        {"name": "liver", "value": 1, "aliases": ["/^liver/i"]},
        {"name": "tumour", "value": 2, "priority": 5},
    ]}))  # fmt: skip
    out = tmp_path / "out"
    assert convert(rs, ct.folder, out, "--labelmap", str(labelmap)) == 0
    labels = np.asarray(nib.load(out / "labels.nii.gz").dataobj)
    assert labels[1, 1, 2] == 1 and labels[5, 5, 2] == 2 and labels[1, 1, 3] == 0
    report = json.loads((out / "labels.json").read_text())
    assert [u["roi"] for u in report["unmapped_rois"]] == ["other"]


# --- hostile input: one error line, exit 1, nothing written ------------------------------------


def assert_refused(capsys, code, out, pattern):
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("xnat-ml: error: "), err
    assert pattern in err, err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


def square_rois(ct):
    return {"box": [rectangle_on_slice(ct, 1, 2, 2, 4, 4)]}


def test_missing_referenced_series(ct, tmp_path, capsys):
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, square_rois(ct), referenced_series_uid="1.2.3.4")
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, "referenced series is missing")


def test_wrong_series_chosen(ct, tmp_path, capsys):
    other = write_series(tmp_path / "ct" / "other", slices=3)
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, square_rois(ct))
    out = tmp_path / "out"
    code = convert(rs, ct.folder, out, "--series-uid", other.series_uid)
    assert_refused(capsys, code, out, "does not match series")
    # Without --series-uid the referenced series is picked from the two.
    assert convert(rs, ct.folder, out) == 0


def test_wrong_frame_of_reference(ct, tmp_path, capsys):
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, square_rois(ct), frame_of_reference_uid="1.2.9")
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, "frame of reference 1.2.9")


def test_roi_in_another_frame_of_reference(ct, tmp_path, capsys):
    rois = {
        "here": [rectangle_on_slice(ct, 1, 2, 2, 4, 4)],
        "there": [rectangle_on_slice(ct, 2, 2, 2, 4, 4)],
    }
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    ds = pydicom.dcmread(rs)
    ds.StructureSetROISequence[1].ReferencedFrameOfReferenceUID = "1.2.77"
    ds.save_as(rs)
    out = tmp_path / "out"
    assert_refused(
        capsys, convert(rs, ct.folder, out), out, "ROI 'there' lies in frame of reference 1.2.77"
    )


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"hello, not DICOM at all", "not a DICOM file"),
        (b"", "not a DICOM file"),
    ],
)
def test_non_dicom_rtstruct(ct, tmp_path, capsys, content, pattern):
    rs = tmp_path / "rs.dcm"
    rs.write_bytes(content)
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, pattern)


def test_image_given_as_rtstruct(ct, tmp_path, capsys):
    out = tmp_path / "out"
    code = convert(ct.files[0], ct.folder, out)
    assert_refused(capsys, code, out, "not an RT Structure Set")


@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.8, 0.97])
def test_truncated_rtstruct(ct, tmp_path, capsys, cut):
    rois = {f"roi{n}": [rectangle_on_slice(ct, k, 2, 2, 6, 6) for k in range(7)] for n in range(4)}
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    blob = rs.read_bytes()
    rs.write_bytes(blob[: int(len(blob) * cut)])
    out = tmp_path / "out"
    code = convert(rs, ct.folder, out)
    err = capsys.readouterr().err
    assert code == 1, "a truncated RTSTRUCT was converted"
    assert err.startswith("xnat-ml: error: RTSTRUCT") and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_zero_rois(ct, tmp_path, capsys):
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, {})
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, "defines no ROIs")


def test_empty_contour_sequence_fails_unless_skipped(ct, tmp_path, capsys):
    rois = {"empty": [], **square_rois(ct)}
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, "'empty' has no closed contour")
    assert convert(rs, ct.folder, out, "--skip-empty") == 0
    assert sorted(p.name for p in out.iterdir()) == ["box.nii.gz", "masks.json"]
    assert "skipped" in " ".join(json.loads((out / "masks.json").read_text())["warnings"])


@pytest.mark.parametrize(
    ("points", "pattern"),
    [
        ([0.0, 0.0, 2.5, 1.0, 1.0, 2.5], "3 points or more"),
        ([0.0, 0.0, 2.5, 1.0, 1.0, 2.5, 5.0], "not a multiple of 3"),
        ([1e9, 0.0, 2.5, 1e9, 5.0, 2.5, 1e9, 5.0, 9.0], "outside the image volume"),
        ([float("nan"), 0.0, 2.5, 1.0, 5.0, 2.5, 4.0, 5.0, 2.5], "NaN or infinite"),
    ],
)
def test_malformed_contours(ct, tmp_path, capsys, points, pattern):
    rois = {"bad": [Contour(points)], **square_rois(ct)}
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, rois)
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out), out, pattern)


def test_failure_leaves_an_existing_output_folder_alone(ct, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, {"bad": [Contour([0.0, 1.0])]})
    assert convert(rs, ct.folder, out) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, square_rois(ct))
    assert convert(rs, ct.folder, out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["box.nii.gz", "keep.txt", "masks.json"]


def test_plane_tolerance_is_bounded(ct, tmp_path, capsys):
    rs = write_rtstruct(tmp_path / "rs.dcm", ct, square_rois(ct))
    out = tmp_path / "out"
    assert_refused(capsys, convert(rs, ct.folder, out, "--plane-tolerance", "0.8"), out, "(0, 0.5]")


def test_library_errors_are_xnat_ml_errors(ct, tmp_path):
    with pytest.raises(XnatMlError, match="no such file"):
        rtstruct_to_masks(tmp_path / "missing.dcm", load_series(ct.folder))
