"""Series geometry: ordering, affines and pixels on awkward but valid series; clear refusals."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from dicom_factory import write_series
from pydicom.uid import RLELossless

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.series import LPS_TO_RAS, load_series


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


OBLIQUE = rotation("z", 20) @ rotation("x", 35) @ rotation("y", -10)
OBLIQUE_IOP = tuple(OBLIQUE[:, 0]) + tuple(OBLIQUE[:, 1])


def assert_grid_matches(series, info) -> None:
    """Every voxel centre of the loaded grid sits where the factory put that pixel."""
    ks = range(len(info.positions))
    for i, j, k in [(0, 0, 0), (info.columns - 1, 0, 1), (2, info.rows - 1, ks[-1]), (3, 4, 2)]:
        expected = info.lps(i, j, k)
        got = (series.lps_affine @ [i, j, k, 1])[:3]
        np.testing.assert_allclose(got, expected, atol=1e-4)
        np.testing.assert_allclose(series.patient_to_voxel(expected)[0], [i, j, k], atol=1e-4)
        ras = (series.affine @ [i, j, k, 1])[:3]
        np.testing.assert_allclose(ras, (LPS_TO_RAS[:3, :3] @ expected), atol=1e-4)


def test_axial_series_geometry_and_pixels(tmp_path):
    info = write_series(tmp_path, rows=10, columns=10, slices=5)
    series = load_series(tmp_path)
    assert series.shape == (10, 10, 5)
    assert series.series_uid == info.series_uid
    assert series.frame_of_reference_uid == info.frame_of_reference_uid
    np.testing.assert_allclose(series.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    data = series.load_pixels()
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data, info.pixels.transpose(2, 1, 0))


def test_non_square_anisotropic_keeps_rows_and_columns_apart(tmp_path):
    info = write_series(
        tmp_path, rows=12, columns=20, slices=4, pixel_spacing=(0.7, 1.3), slice_spacing=2.5
    )
    series = load_series(tmp_path)
    assert series.shape == (20, 12, 4)
    assert series.spacing == pytest.approx((1.3, 0.7, 2.5))
    data = series.load_pixels()
    # data[i, j, k] is column i, row j: a transposed mask would fail here.
    assert data[19, 0, 0] == info.pixels[0, 0, 19]
    assert data[0, 11, 3] == info.pixels[3, 11, 0]
    assert_grid_matches(series, info)
    image = series.to_nifti()
    assert image.header.get_zooms() == pytest.approx((1.3, 0.7, 2.5))
    np.testing.assert_allclose(image.header.get_sform(), series.affine)
    np.testing.assert_allclose(image.header.get_qform(), series.affine, atol=1e-6)


def test_oblique_orientation(tmp_path):
    info = write_series(
        tmp_path,
        rows=9,
        columns=14,
        slices=6,
        orientation=OBLIQUE_IOP,
        origin=(-30.5, 12.25, 80.0),
        pixel_spacing=(0.8, 1.1),
        slice_spacing=3.0,
    )
    series = load_series(tmp_path)
    np.testing.assert_allclose(series.slice_normal, OBLIQUE[:, 2], atol=1e-6)
    assert_grid_matches(series, info)


@pytest.mark.parametrize("numbers", ["reverse", "random"])
def test_order_follows_position_not_names_or_instance_numbers(tmp_path, numbers):
    info = write_series(tmp_path, slices=9, shuffle_names=True, instance_numbers=numbers, seed=3)
    series = load_series(tmp_path)
    assert list(series.sop_instance_uids) == info.sop_instance_uids
    np.testing.assert_array_equal(series.load_pixels(), info.pixels.transpose(2, 1, 0))


def test_stack_written_against_the_normal_is_sorted_along_it(tmp_path):
    positions = np.array([[0.0, 0.0, -2.0 * k] for k in range(5)])
    info = write_series(tmp_path, positions=positions, slice_spacing=2.0)
    series = load_series(tmp_path)
    np.testing.assert_allclose(series.positions[:, 2], [-8, -6, -4, -2, 0])
    assert series.sop_instance_uids[0] == info.sop_instance_uids[-1]
    assert series.slice_spacing == pytest.approx(2.0)


def test_several_series_need_a_uid(tmp_path):
    a = write_series(tmp_path / "a", slices=3)
    b = write_series(tmp_path / "b", slices=4)
    with pytest.raises(XnatMlError, match="holds 2 series") as err:
        load_series(tmp_path)
    assert a.series_uid in str(err.value) and b.series_uid in str(err.value)
    assert load_series(tmp_path, series_uid=b.series_uid).shape[2] == 4
    with pytest.raises(XnatMlError, match="no series with UID 1.2.3"):
        load_series(tmp_path, series_uid="1.2.3")


def test_uneven_spacing_is_refused(tmp_path):
    positions = np.array([[0.0, 0.0, z] for z in (0, 1, 2, 4, 5)])
    write_series(tmp_path, positions=positions)
    with pytest.raises(XnatMlError, match="uneven slice spacing"):
        load_series(tmp_path)


def test_gantry_tilt_is_refused(tmp_path):
    positions = np.array([[0.0, 0.3 * k, 2.0 * k] for k in range(5)])  # ~8.5 degree tilt
    write_series(tmp_path, positions=positions, slice_spacing=2.0)
    with pytest.raises(XnatMlError, match="gantry tilt"):
        load_series(tmp_path)


def test_duplicate_positions_are_refused(tmp_path):
    positions = np.array([[0.0, 0.0, z] for z in (0, 1, 1, 2)])
    write_series(tmp_path, positions=positions)
    with pytest.raises(XnatMlError, match="share one position"):
        load_series(tmp_path)


def test_rescale_is_applied_with_a_sensible_type(tmp_path):
    info = write_series(tmp_path / "hu", slices=3, intercept=-1024)
    data = load_series(tmp_path / "hu").load_pixels()
    assert data.dtype == np.int16
    assert data[1, 0, 0] == info.pixels[0, 0, 1] - 1024
    write_series(tmp_path / "pet", slices=3, slope=0.25, intercept=0.5)
    data = load_series(tmp_path / "pet").load_pixels()
    assert data.dtype == np.float32
    assert data[1, 0, 0] == pytest.approx(info.pixels[0, 0, 1] * 0.25 + 0.5)


def test_compressed_and_narrow_pixel_data_go_through_pydicom(tmp_path):
    info = write_series(tmp_path, slices=3, intercept=-1024)
    first = pydicom.dcmread(info.files[0])
    first.compress(RLELossless)  # encoded pixel data: the decoder path, not the byte view
    first.save_as(info.files[0])
    second = pydicom.dcmread(info.files[1])
    second.BitsStored = 12  # fewer bits than allocated: pydicom masks the unused ones
    second.HighBit = 11
    second.save_as(info.files[1])
    data = load_series(tmp_path).load_pixels()
    np.testing.assert_array_equal(data, info.pixels.transpose(2, 1, 0) - 1024)


def test_stray_files_are_skipped_but_broken_dicom_is_an_error(tmp_path):
    info = write_series(tmp_path, slices=3)
    (tmp_path / "notes.txt").write_text("not DICOM")
    (tmp_path / "DICOMDIR-ish").write_bytes(b"\x00" * 10)
    assert load_series(tmp_path).shape[2] == 3
    blob = info.files[1].read_bytes()
    info.files[1].write_bytes(blob[:200])  # header cut short
    with pytest.raises(XnatMlError, match=info.files[1].name):
        load_series(tmp_path)


def test_truncated_pixel_data_is_an_error_when_pixels_are_read(tmp_path):
    info = write_series(tmp_path, slices=3)
    blob = info.files[2].read_bytes()
    info.files[2].write_bytes(blob[:-100])
    series = load_series(tmp_path)  # headers are intact
    with pytest.raises(XnatMlError, match="cannot read pixel data"):
        series.load_pixels()


def test_empty_or_missing_folder(tmp_path):
    with pytest.raises(XnatMlError, match="no DICOM image slices"):
        load_series(tmp_path)
    with pytest.raises(XnatMlError, match="not a directory"):
        load_series(tmp_path / "nope")
