"""`xnat-ml convert labels`: model output (label NIfTI) back to SEG / RTSTRUCT, and back again."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import write_series

from xnat_ml.cli import main
from xnat_ml.imaging.series import load_series


@pytest.fixture()
def prediction(tmp_path):
    """A non-square series, a two-label prediction saved RAS-canonical, and its label map."""
    ct = write_series(tmp_path / "ct", rows=14, columns=22, slices=6)
    series = load_series(ct.folder)
    labels = np.zeros(series.shape, np.uint8)
    labels[3:12, 2:9, 1:5] = 10
    labels[5:8, 4:6, 2:4] = 0  # a hole: must survive the RTSTRUCT trip
    labels[14:20, 9:13, 2:5] = 20
    image = nib.as_closest_canonical(nib.Nifti1Image(labels, series.affine))
    nib.save(image, tmp_path / "prediction.nii.gz")
    (tmp_path / "map.txt").write_text("Liver=10\nSpleen=20\n")
    return ct.folder, labels, tmp_path


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_labels_go_back_as_dicom_and_read_back_exactly(prediction, kind):
    folder, labels, tmp = prediction
    out = tmp / f"{kind}.dcm"
    argv = ["convert", "labels", str(tmp / "prediction.nii.gz"), "--series", str(folder),
            "--labelmap", str(tmp / "map.txt"), "--to", kind, "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    masks = tmp / "masks"
    assert main(["convert", kind, str(out), "--series", str(folder), "--out", str(masks),
                 "--labelmap", str(tmp / "map.txt")]) == 0  # fmt: skip
    back = np.asarray(nib.load(masks / "labels.nii.gz").dataobj)
    np.testing.assert_array_equal(back, labels)


def test_values_missing_from_the_label_map_are_refused(prediction, capsys):
    folder, _, tmp = prediction
    (tmp / "short.txt").write_text("Liver=10\n")
    out = tmp / "seg.dcm"
    argv = ["convert", "labels", str(tmp / "prediction.nii.gz"), "--series", str(folder),
            "--labelmap", str(tmp / "short.txt"), "--to", "seg", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "values [20] are not in the label map" in err, err
    assert not out.exists()


def test_a_label_image_on_another_grid_is_refused(prediction, capsys):
    folder, labels, tmp = prediction
    nib.save(nib.Nifti1Image(labels[:, :, :4], np.eye(4)), tmp / "wrong.nii.gz")
    out = tmp / "rt.dcm"
    argv = ["convert", "labels", str(tmp / "wrong.nii.gz"), "--series", str(folder),
            "--labelmap", str(tmp / "map.txt"), "--to", "rtstruct", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert "wrong.nii.gz" in capsys.readouterr().err
    assert not out.exists()
