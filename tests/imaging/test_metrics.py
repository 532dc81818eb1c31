"""Dice, HD95 and volume error on masks whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xnat_ml.imaging.metrics import dice, hd95, score, volume_error


def cube(shape, lo, hi):
    mask = np.zeros(shape, bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_identical_masks():
    a = cube((20, 20, 20), (5, 5, 5), (15, 15, 15))
    s = score(a, a, (1.0, 1.0, 1.0))
    assert (s.dice, s.hd95, s.volume_error) == (1.0, 0.0, 0.0)


def test_shifted_cube_in_anisotropic_grid():
    a = cube((30, 20, 20), (5, 5, 5), (15, 15, 15))
    b = cube((30, 20, 20), (7, 5, 5), (17, 15, 15))  # shifted 2 voxels along i (3 mm each)
    assert dice(a, b) == pytest.approx(0.8)
    assert hd95(a, b, (3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert volume_error(a, b) == 0.0


def test_grown_cube_volume_error_and_hd95():
    a = cube((30, 30, 30), (10, 10, 10), (20, 20, 20))
    b = cube((30, 30, 30), (9, 9, 9), (21, 21, 21))
    s = score(b, a, (1.0, 1.0, 1.0))
    assert s.volume_error == pytest.approx((12**3 - 10**3) / 10**3)
    # 128 of the 728 surface voxels of the grown cube are edges or corners (> 5 %): sqrt(2).
    assert s.hd95 == pytest.approx(np.sqrt(2))
    assert s.dice == pytest.approx(2 * 1000 / (1000 + 1728))


def test_empty_masks():
    empty = np.zeros((5, 5, 5), bool)
    full = cube((5, 5, 5), (1, 1, 1), (3, 3, 3))
    assert score(empty, empty, (1, 1, 1)).dice == 1.0
    assert score(empty, full, (1, 1, 1)).hd95 == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        score(empty, np.zeros((4, 5, 5), bool), (1, 1, 1))
