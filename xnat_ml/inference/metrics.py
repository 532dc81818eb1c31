"""Per-label scores of a predicted label volume against a reference one in the same grid:
Dice, HD95 in mm and the volume difference in ml (predicted minus reference).

The mask scores are imaging.metrics' (HD95 as MONAI's ``compute_hausdorff_distance``,
non-directed, 95th percentile): inference only splits label volumes into per-label masks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.metrics import dice, hd95

_GRID_TOLERANCE = 1e-3  # mm


@dataclass(frozen=True)
class LabelScores:
    """One label's scores; ``hd95`` is inf when exactly one of the two masks is empty."""

    dice: float
    hd95: float  # mm
    volume_difference: float  # ml, predicted minus reference
    pred_ml: float
    ref_ml: float


def label_scores(
    pred: nib.Nifti1Image, ref: nib.Nifti1Image, labels: Iterable[int] | None = None
) -> dict[int, LabelScores]:
    """Scores per label value (``labels``, default every non-zero value in either volume)."""
    if pred.shape[:3] != ref.shape[:3] or not np.allclose(pred.affine, ref.affine,
                                                          atol=_GRID_TOLERANCE):  # fmt: skip
        raise XnatMlError(f"label volumes: not on one grid (shapes {pred.shape} and {ref.shape}, "
                          "or their affines differ)")  # fmt: skip
    pred_values = np.asarray(pred.dataobj).reshape(pred.shape[:3])
    ref_values = np.asarray(ref.dataobj).reshape(ref.shape[:3])
    if labels is None:
        labels = sorted((set(np.unique(pred_values)) | set(np.unique(ref_values))) - {0})
    spacing = tuple(float(s) for s in nib.affines.voxel_sizes(ref.affine))
    voxel_ml = abs(float(np.linalg.det(ref.affine[:3, :3]))) / 1000.0
    scores = {}
    for value in labels:
        pred_mask, ref_mask = pred_values == value, ref_values == value
        pred_ml = int(np.count_nonzero(pred_mask)) * voxel_ml
        ref_ml = int(np.count_nonzero(ref_mask)) * voxel_ml
        scores[int(value)] = LabelScores(dice=dice(pred_mask, ref_mask),
                                         hd95=hd95(pred_mask, ref_mask, spacing),
                                         volume_difference=pred_ml - ref_ml,
                                         pred_ml=pred_ml, ref_ml=ref_ml)  # fmt: skip
    return scores
