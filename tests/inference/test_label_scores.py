"""Per-label Dice, HD95 (mm) and volume difference (ml) on label volumes known by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from xnat_ml.errors import XnatMlError
from xnat_ml.inference import label_scores

AFFINE = np.diag([3.0, 1.0, 2.0, 1.0])  # anisotropic: 6 mm^3 a voxel


def volume(cubes: dict[int, tuple[tuple[int, int, int], tuple[int, int, int]]]):
    data = np.zeros((40, 30, 30), np.uint8)
    for value, (lo, hi) in cubes.items():
        data[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = value
    return nib.Nifti1Image(data, AFFINE)


def test_scores_per_label() -> None:
    ref = volume({1: ((2, 2, 2), (8, 8, 8)), 2: ((15, 5, 5), (25, 15, 15)),
                  3: ((30, 20, 20), (34, 24, 24))})
    # label 1 exact; label 2 shifted two voxels along i (3 mm each); label 3 one slab longer
    pred = volume({1: ((2, 2, 2), (8, 8, 8)), 2: ((17, 5, 5), (27, 15, 15)),
                   3: ((30, 20, 20), (34, 24, 25))})
    scores = label_scores(pred, ref)
    assert set(scores) == {1, 2, 3}
    assert (scores[1].dice, scores[1].hd95, scores[1].volume_difference) == (1.0, 0.0, 0.0)
    assert scores[2].dice == pytest.approx(0.8)
    assert scores[2].hd95 == pytest.approx(6.0)
    assert scores[2].ref_ml == pytest.approx(1000 * 6 / 1000)  # 1000 voxels of 6 mm^3
    assert scores[2].volume_difference == 0.0
    assert scores[3].dice == pytest.approx(2 * 64 / (64 + 80))
    assert scores[3].volume_difference == pytest.approx(16 * 6 / 1000)  # 0.096 ml more


def test_a_label_missing_from_the_prediction() -> None:
    ref = volume({1: ((2, 2, 2), (8, 8, 8)), 3: ((20, 20, 20), (24, 24, 24))})
    pred = volume({1: ((2, 2, 2), (8, 8, 8))})
    scores = label_scores(pred, ref, labels=[1, 3, 5])
    assert scores[3].dice == 0.0 and scores[3].hd95 == float("inf")
    assert scores[3].volume_difference == pytest.approx(-64 * 6 / 1000)
    assert (scores[5].dice, scores[5].hd95) == (1.0, 0.0)  # absent in both: agreement


def test_volumes_on_different_grids_are_refused() -> None:
    ref = volume({1: ((2, 2, 2), (8, 8, 8))})
    moved = nib.Nifti1Image(np.asarray(ref.dataobj), np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(XnatMlError, match="label volumes: not on one grid"):
        label_scores(moved, ref)
