"""Overlap and surface-distance scores between two binary masks in one voxel grid.

Used to check converters against analytic ground truth (the RTSTRUCT conformance set) and
mask → RTSTRUCT → mask round trips. Surface distances follow MONAI's `compute_hausdorff_distance`
(non-directed): the surface of a mask is its voxels with a 6-neighbour outside it, distances are
Euclidean between voxel centres in mm, and HD95 is the larger of the two directed
95th percentiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MaskScores:
    dice: float
    hd95: float  # mm; inf when exactly one mask is empty
    volume_error: float  # |V_pred - V_ref| / V_ref
    pred_voxels: int
    ref_voxels: int


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(ref))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & ref)) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Symmetric 95 % Hausdorff distance in mm between the surfaces of two masks."""
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    both = pred | ref
    if not both.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("inf")
    # Crop to the union's bounding box (plus a margin) so distance maps stay small.
    box = tuple(slice(max(int(idx.min()) - 1, 0), int(idx.max()) + 2) for idx in np.nonzero(both))
    pred, ref = pred[box], ref[box]
    surf_pred, surf_ref = _surface(pred), _surface(ref)
    to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=spacing)
    return float(max(np.percentile(to_ref[surf_pred], 95), np.percentile(to_pred[surf_ref], 95)))


def volume_error(pred: np.ndarray, ref: np.ndarray) -> float:
    ref_voxels = int(np.count_nonzero(ref))
    pred_voxels = int(np.count_nonzero(pred))
    if ref_voxels == 0:
        return 0.0 if pred_voxels == 0 else float("inf")
    return abs(pred_voxels - ref_voxels) / ref_voxels


def score(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> MaskScores:
    """Dice, HD95 (mm) and relative volume error of `pred` against the reference `ref`."""
    if pred.shape != ref.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {ref.shape}")
    pred, ref = pred.astype(bool, copy=False), ref.astype(bool, copy=False)
    union = np.nonzero(pred | ref)
    if union[0].size:  # every score is unchanged by cropping to the union's bounding box
        box = tuple(slice(int(idx.min()), int(idx.max()) + 1) for idx in union)
        pred, ref = pred[box], ref[box]
    return MaskScores(
        dice=dice(pred, ref),
        hd95=hd95(pred, ref, spacing),
        volume_error=volume_error(pred, ref),
        pred_voxels=int(np.count_nonzero(pred)),
        ref_voxels=int(np.count_nonzero(ref)),
    )
