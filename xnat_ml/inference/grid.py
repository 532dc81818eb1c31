"""Bring a label volume onto the source image's grid.

A bundle whose post-processing inverts its spatial transforms (MONAI's ``Invertd``) already
returns the source grid; otherwise the result is on the model's grid (its orientation and
spacing) and is resampled here, nearest neighbour, through the two affines.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

log = logging.getLogger(__name__)

_AFFINE_TOLERANCE = 1e-3  # mm; float32 round trips through MONAI's MetaTensor stay well inside


def onto_source(labels: np.ndarray, affine: np.ndarray, source: nib.Nifti1Image) -> nib.Nifti1Image:
    """``labels`` (with its voxel-to-world ``affine``) as a NIfTI on ``source``'s grid: as is when
    the grids agree, else resampled nearest neighbour (logged, once per call)."""
    shape = source.shape[:3]
    if labels.shape != shape or not np.allclose(affine, source.affine, atol=_AFFINE_TOLERANCE):
        log.info("resampled the prediction from the model grid %s to the source grid %s "
                 "(nearest neighbour)", "x".join(map(str, labels.shape)),
                 "x".join(map(str, shape)))  # fmt: skip
        moved = resample_from_to(nib.Nifti1Image(labels, affine), (shape, source.affine),
                                 order=0, mode="constant", cval=0)  # fmt: skip
        labels = np.asarray(moved.dataobj).astype(labels.dtype)
    image = nib.Nifti1Image(labels, source.affine)
    image.set_qform(source.affine, code=int(source.header["qform_code"]) or 1)
    image.set_sform(source.affine, code=int(source.header["sform_code"]) or 1)
    image.set_data_dtype(labels.dtype)
    return image
