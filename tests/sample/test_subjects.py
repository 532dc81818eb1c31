"""Sample subjects: deterministic, distinct, with DICOM geometry that readers agree with."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from xnat_ml.imaging.series import load_series
from xnat_ml.sample.anatomy import load_anatomy
from xnat_ml.sample.dicom_series import T1W, T2W, write_series
from xnat_ml.sample.project import annotator_masks
from xnat_ml.sample.subjects import PROTOCOLS, make_subject, render

PROJECT = "TESTP"


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy()


@pytest.fixture(scope="module")
def written(anatomy, tmp_path_factory):
    """One subject per protocol, T1w and T2w written as DICOM: (subject, volumes, folders)."""
    root = tmp_path_factory.mktemp("sample")
    out = []
    for index in range(len(PROTOCOLS)):
        subject = make_subject(index, seed=0)
        t1 = render(subject, anatomy, "T1w")
        t2 = render(subject, anatomy, "T2w", subject.grid.resliced(4.0))
        write_series(t1, subject, T1W, PROJECT, root / subject.label / "t1")
        write_series(t2, subject, T2W, PROJECT, root / subject.label / "t2")
        out.append((subject, t1, root / subject.label))
    return out


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.iterdir())]


def test_anatomy_is_read_from_package_files_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    load_anatomy.cache_clear()
    try:
        anatomy = load_anatomy()
    finally:
        load_anatomy.cache_clear()
    assert anatomy.t1.shape == anatomy.grey_matter.shape == anatomy.white_matter.shape
    assert anatomy.t1.shape == (197, 233, 189)  # MNI152 at 1 mm
    assert 0.99 <= anatomy.t1.max() <= 1.0 and anatomy.grey_matter.max() <= 1.0


def test_same_seed_writes_identical_files(anatomy, tmp_path):
    for run in ("a", "b"):
        subject = make_subject(1, seed=7)
        write_series(render(subject, anatomy), subject, T1W, PROJECT, tmp_path / run)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) and names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_subjects_differ_in_pixels_uids_and_grids(written, anatomy):
    headers = [_headers(folder / "t1")[0] for _, _, folder in written]
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientName"):
        assert len({str(h.get(key)) for h in headers}) == len(headers), key
    shapes = {volumes.image.shape for _, volumes, _ in written}
    assert len(shapes) == len(written)
    # Same protocol, other seed: another head, another image.
    first, other = make_subject(0, seed=0), make_subject(0, seed=1)
    assert not np.allclose(first.scale, other.scale)
    a = render(first, anatomy, grid=first.grid).image.astype(float)
    b = render(other, anatomy, grid=first.grid).image.astype(float)
    assert np.abs(a - b).mean() > 10  # MR units; the images are not the same up to noise


def test_geometry_tags_match_the_rendered_grid(written):
    for subject, volumes, folder in written:
        series = load_series(folder / "t1")
        grid = subject.grid
        assert series.shape == grid.shape == volumes.image.shape
        np.testing.assert_allclose(series.lps_affine, grid.lps_affine, atol=1e-3)
        assert np.array_equal(series.load_pixels(), volumes.image)
        for ds in _headers(folder / "t1"):
            iop = np.array(ds.ImageOrientationPatient, dtype=float)
            np.testing.assert_allclose(np.linalg.norm(iop.reshape(2, 3), axis=1), 1, atol=1e-6)
            assert abs(iop[:3] @ iop[3:]) < 1e-6
            assert [float(v) for v in ds.PixelSpacing] == list(grid.pixel_spacing)
            assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == grid.slice_spacing
            for key in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                        "FrameOfReferenceUID"):  # fmt: skip
                assert UID(str(ds[key].value)).is_valid, key
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        t2 = _headers(folder / "t2")
        assert {ds.FrameOfReferenceUID for ds in t2} == {series.frame_of_reference_uid}
        assert len({ds.StudyInstanceUID for ds in t2}) == 1
        assert t2[0].StudyInstanceUID == _headers(folder / "t1")[0].StudyInstanceUID


def test_protocols_cover_oblique_non_square_and_sagittal(written):
    by_name = {subject.protocol.name: load_series(folder / "t1") for subject, _, folder in written}
    oblique = by_name["oblique"]
    assert not np.allclose(np.abs(oblique.slice_normal), [0, 0, 1], atol=0.05)
    non_square = by_name["axial-nonsquare"]
    assert non_square.pixel_spacing[0] != non_square.pixel_spacing[1]
    assert np.allclose(np.abs(by_name["sagittal"].slice_normal), [1, 0, 0])


def test_tissue_contrast_and_masks_are_anatomical(written):
    for _, volumes, _ in written:
        masks = annotator_masks(volumes)
        grey, white = masks["Grey Matter"], masks["White Matter"]
        assert grey.sum() > 10_000 and white.sum() > 10_000
        assert not (grey & white).any()
        # T1w: white matter is brighter than grey matter.
        assert np.median(volumes.image[white]) > 1.15 * np.median(volumes.image[grey])
