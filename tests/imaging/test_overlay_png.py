"""overlay_png: a mid-slice of a label map over its image as a PNG of the asked size, the
labels in colour where they are and grey elsewhere; broken inputs are one-line errors."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.overlay import middle_slice, overlay_png


def _volumes() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(0).normal(100, 10, (20, 24, 12)).astype(np.float32)
    labels = np.zeros(image.shape, np.uint8)
    labels[:10, :, 6:9] = 1  # left half of slices 6..8 along axis 2
    labels[10:, :, 6:9] = 2
    return image, labels


def _rgb(png: bytes) -> np.ndarray:
    picture = Image.open(io.BytesIO(png))
    assert picture.format == "PNG"
    return np.asarray(picture.convert("RGB")).astype(int)


def test_png_has_the_size_and_colours_the_labels_only():
    image, labels = _volumes()
    rgb = _rgb(overlay_png(image, labels, size=(200, 160)))
    assert rgb.shape == (160, 200, 3)
    # rot90 puts axis 0 across: label 1 on the left half, label 2 on the right, in two colours
    left, right = rgb[80, 40], rgb[80, 160]
    assert np.ptp(left) > 30 and np.ptp(right) > 30 and np.abs(left - right).max() > 30

    empty = np.zeros_like(labels)
    grey = _rgb(overlay_png(image, empty, size=(64, 64)))
    assert grey.shape == (64, 64, 3) and np.ptp(grey, axis=2).max() == 0  # no colour at all


def test_nifti_images_and_the_slice_through_the_labels():
    image, labels = _volumes()
    assert middle_slice(labels, 2) == 7 and middle_slice(np.zeros_like(labels), 2) == 6
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    png = overlay_png(nib.Nifti1Image(image[..., None], affine), nib.Nifti1Image(labels, affine),
                      axis=0, index=3, title="S1_MR")  # fmt: skip
    assert _rgb(png).shape == (256, 256, 3)


@pytest.mark.parametrize("image, labels, kwargs, problem", [
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 5)), {}, "image (4, 4, 4) and label map (4, 4, 5)"),
    (np.zeros((4, 4)), np.zeros((4, 4)), {}, "image is not a 3-D volume"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4, 2)), {}, "label map is not a 3-D volume"),
    (np.zeros((4, 4, 0)), np.zeros((4, 4, 0)), {}, "image is not a 3-D volume"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"axis": 3}, "axis 3 is not 0, 1 or 2"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"index": 4}, "slice 4 is outside 0..3"),
    (np.zeros((4, 4, 4)), np.zeros((4, 4, 4)), {"size": (10**6, 10)}, "not within 16..4096"),
])  # fmt: skip
def test_broken_inputs_are_one_line_errors(image, labels, kwargs, problem):
    with pytest.raises(XnatMlError, match=r"^overlay: ") as caught:
        overlay_png(image, labels, **kwargs)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_nan_and_constant_images_still_draw():
    labels = np.ones((8, 8, 8), np.uint8)
    for image in (np.full((8, 8, 8), np.nan), np.full((8, 8, 8), 5.0)):
        assert _rgb(overlay_png(image, labels, size=(32, 32))).shape == (32, 32, 3)
