"""RTSTRUCT conformance: all 7 analytic ROIs within their Dice, HD95 and volume thresholds."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conformance import RTSTRUCT, SERIES, THRESHOLDS, score_folder

from xnat_ml.cli import main


def test_conformance_set_passes_every_threshold(conformance_root, tmp_path, capsys):
    out = tmp_path / "masks"
    argv = ["convert", "rtstruct", str(conformance_root / RTSTRUCT)]
    argv += ["--series", str(conformance_root / SERIES), "--out", str(out)]
    assert main(argv) == 0
    verdicts = score_folder(out, conformance_root)
    print("\n".join(v.line() for v in verdicts))
    assert {v.roi for v in verdicts} == set(THRESHOLDS)
    assert all(v.passed for v in verdicts), [v.line() for v in verdicts if not v.passed]

    # The masks share the exact grid `convert series` writes.
    image_path = tmp_path / "ct.nii.gz"
    assert (
        main(["convert", "series", str(conformance_root / SERIES), "--out", str(image_path)]) == 0
    )
    image, mask = nib.load(image_path), nib.load(out / "torus.nii.gz")
    assert image.shape == mask.shape
    np.testing.assert_array_equal(image.affine, mask.affine)
    assert mask.get_data_dtype() == np.uint8
