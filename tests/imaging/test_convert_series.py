"""`xnat-ml convert series`: the written NIfTI, its refusals, and the command as users run it."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series

from xnat_ml.cli import main


def test_writes_oblique_non_square_series_with_exact_geometry(tmp_path):
    info = write_series(
        tmp_path / "ct",
        rows=11,
        columns=17,
        slices=5,
        pixel_spacing=(0.6, 1.7),
        slice_spacing=4.0,
        orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # sagittal
        origin=(20.0, -100.0, 50.0),
        shuffle_names=True,
        instance_numbers="random",
        intercept=-1024,
    )
    out = tmp_path / "nifti" / "image.nii.gz"
    assert main(["convert", "series", str(info.folder), "--out", str(out)]) == 0
    image = nib.load(out)
    assert image.shape == (17, 11, 5)
    assert image.get_data_dtype() == np.int16
    data = np.asarray(image.dataobj)
    np.testing.assert_array_equal(data, info.pixels.transpose(2, 1, 0).astype(np.int16) - 1024)
    # Voxel (i, j, k) maps to the patient position the factory gave that pixel (RAS = -L, -P).
    for ijk in [(0, 0, 0), (16, 0, 0), (0, 10, 4), (5, 7, 2)]:
        ras = image.affine @ [*ijk, 1]
        np.testing.assert_allclose(ras[:3], info.lps(*ijk) * [-1, -1, 1], atol=1e-4)
    assert image.header["qform_code"] == 1 and image.header["sform_code"] == 1
    assert [p.name for p in out.parent.iterdir()] == ["image.nii.gz"]


def test_several_series_need_a_choice(tmp_path, capsys):
    a = write_series(tmp_path / "mixed" / "a", slices=2)
    b = write_series(tmp_path / "mixed" / "b", slices=3)
    out = tmp_path / "image.nii.gz"
    assert main(["convert", "series", str(tmp_path / "mixed"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert a.series_uid in err and b.series_uid in err and not out.exists()
    argv = ["convert", "series", str(tmp_path / "mixed"), "--out", str(out)]
    assert main([*argv, "--series-uid", b.series_uid]) == 0
    assert nib.load(out).shape == (16, 16, 3)


@pytest.mark.parametrize("name", ["image.nrrd", "image"])
def test_output_must_be_nifti(tmp_path, capsys, name):
    write_series(tmp_path / "ct", slices=2)
    assert main(["convert", "series", str(tmp_path / "ct"), "--out", str(tmp_path / name)]) == 1
    assert "must end in .nii or .nii.gz" in capsys.readouterr().err


def test_unreadable_pixels_leave_nothing(tmp_path, capsys):
    info = write_series(tmp_path / "ct", slices=3)
    info.files[1].write_bytes(info.files[1].read_bytes()[:-40])
    out = tmp_path / "out" / "image.nii.gz"
    assert main(["convert", "series", str(info.folder), "--out", str(out)]) == 1
    assert "cannot read pixel data" in capsys.readouterr().err
    assert not out.exists() and not list(out.parent.glob("*partial*"))


def test_command_line_errors_are_one_line(tmp_path):
    positions = np.array([[0.0, 0.0, z] for z in (0, 1, 3)])
    write_series(tmp_path / "ct", positions=positions)
    run = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "convert", "series", str(tmp_path / "ct"), "--out",
         str(tmp_path / "x.nii.gz")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "uneven slice spacing" in lines[0], run.stderr
    help_run = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "convert", "rtstruct", "--help"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert help_run.returncode == 0 and "even-odd" in help_run.stdout
