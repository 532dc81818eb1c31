"""Real anatomy that ships inside nilearn: the MNI152 T1 template and its tissue maps.

These are package files (nilearn/datasets/data/*.nii.gz); loading them at 1 mm, their native
resolution, reads those files and nothing else, so sample data needs no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Template volumes on one grid, with the voxel → RAS mm affine they share."""

    t1: np.ndarray  # float32, 0..1
    grey_matter: np.ndarray  # probability 0..1
    white_matter: np.ndarray  # probability 0..1
    affine: np.ndarray  # 4x4, voxel → RAS mm

    @cached_property
    def csf(self) -> np.ndarray:
        """What is brain in the T1 but neither grey nor white matter (ventricles, sulci)."""
        inside = self.t1 > 0.05
        return np.where(inside, np.clip(1.0 - self.grey_matter - self.white_matter, 0, 1), 0)


@cache
def load_anatomy() -> Anatomy:
    """The MNI152 2009 T1, grey- and white-matter templates at 1 mm (read once per process)."""
    from nilearn.datasets import (  # slow import (~2 s): only when sample data is made
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    t1 = load_mni152_template(resolution=1)
    grey = load_mni152_gm_template(resolution=1)
    white = load_mni152_wm_template(resolution=1)
    return Anatomy(
        t1=np.asarray(t1.get_fdata(dtype=np.float32)),
        grey_matter=np.asarray(grey.get_fdata(dtype=np.float32)),
        white_matter=np.asarray(white.get_fdata(dtype=np.float32)),
        affine=np.asarray(t1.affine, dtype=float),
    )
