"""Realistic masks for round trips: nilearn's bundled MNI152 grey/white-matter maps resampled
onto a synthetic DICOM series (no network: the maps ship inside the nilearn package).

The series is placed in MNI space (LPS = RAS with x, y negated), so any orientation, spacing and
matrix size cuts a real-looking brain: thin folded grey matter with white matter holes in it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
from dicom_factory import write_series
from scipy.ndimage import map_coordinates

from xnat_ml.imaging.series import Series, load_series


@cache
def _mni_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from nilearn import datasets

    grey = datasets.load_mni152_gm_template(resolution=2)
    white = datasets.load_mni152_wm_template(resolution=2)
    return grey.get_fdata(dtype=np.float32), white.get_fdata(dtype=np.float32), grey.affine


def tissue_masks(series: Series) -> dict[str, np.ndarray]:
    """Grey matter, white matter (disjoint) and brain (their union, overlapping both) on the
    series grid: linear interpolation of the probability maps, then a 0.5 threshold."""
    grey, white, mni_affine = _mni_maps()
    ijk = np.indices(series.shape).reshape(3, -1)
    ras = series.affine[:3, :3] @ ijk + series.affine[:3, 3:4]
    mni_vox = np.linalg.inv(mni_affine)[:3, :3] @ ras + np.linalg.inv(mni_affine)[:3, 3:4]
    gm = map_coordinates(grey, mni_vox, order=1).reshape(series.shape) > 0.5
    wm = map_coordinates(white, mni_vox, order=1).reshape(series.shape) > 0.5
    wm &= ~gm
    return {"grey matter": gm, "white matter": wm, "brain": gm | wm}


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


GEOMETRIES = {
    # name: (rows, columns, slices, pixel spacing (row, col), slice spacing, direction matrix)
    "axial non-square": (44, 36, 8, (3.0, 2.5), 4.0, np.eye(3)),
    "oblique non-square": (40, 52, 7, (2.2, 2.6), 3.5, rotation("z", 25) @ rotation("x", 30)),
    "sagittal": (40, 40, 6, (3.0, 3.0), 5.0, np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0.0]]).T),
}


def brain_series(folder: Path, geometry: str) -> Series:
    """A series of the named geometry centred on the MNI brain (near the ventricles)."""
    rows, columns, slices, spacing, step, direction = GEOMETRIES[geometry]
    row_cos, col_cos = direction[:, 0], direction[:, 1]
    normal = np.cross(row_cos, col_cos)
    centre_lps = np.array([0.0, 15.0, 10.0])  # RAS (0, -15, 10)
    origin = centre_lps - (
        (columns - 1) / 2 * spacing[1] * row_cos
        + (rows - 1) / 2 * spacing[0] * col_cos
        + (slices - 1) / 2 * step * normal
    )
    write_series(
        folder,
        rows=rows,
        columns=columns,
        slices=slices,
        pixel_spacing=spacing,
        slice_spacing=step,
        orientation=tuple(row_cos) + tuple(col_cos),
        origin=origin,
    )
    return load_series(folder)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total
