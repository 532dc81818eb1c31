"""The shared RTSTRUCT conformance fixture: unpacking, pass thresholds and scoring.

Thresholds are those of ../shared/data/README.md (Dice ≥, HD95 ≤ mm, volume error ≤).
Used by tests/imaging/test_conformance.py and benchmarks/bench_rtstruct.py.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from shared_data import SHARED_DATA

from xnat_ml.imaging.metrics import MaskScores, score

ARCHIVE = SHARED_DATA / "rtstruct-conformance.tgz"
RTSTRUCT = "rtstruct/primitives_planar.dcm"
SERIES = "refct"
GROUNDTRUTH = "groundtruth"

DEFAULT_THRESHOLDS = (0.95, 2.0, 0.03)
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "sphere": (0.98, 1.5, 0.03),
    "cube": (0.99, 1.0, 0.03),
    "cylinder": (0.97, 1.5, 0.03),
    "ellipsoid": (0.97, 2.0, 0.03),
    "torus": (0.93, 2.5, 0.03),
    "hollow_sphere": (0.92, 2.5, 0.05),
    "straw": (0.92, 2.5, 0.05),
}


@dataclass(frozen=True)
class RoiVerdict:
    roi: str
    scores: MaskScores | None  # None: no prediction, or another grid
    problem: str = ""

    @property
    def passed(self) -> bool:
        if self.scores is None:
            return False
        min_dice, max_hd95, max_volume_error = THRESHOLDS.get(self.roi, DEFAULT_THRESHOLDS)
        return (
            self.scores.dice >= min_dice
            and self.scores.hd95 <= max_hd95
            and self.scores.volume_error <= max_volume_error
        )

    def line(self) -> str:
        if self.scores is None:
            return f"{self.roi:14s} FAIL ({self.problem})"
        s = self.scores
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{self.roi:14s} {verdict} dice={s.dice:.4f} hd95={s.hd95:.2f}mm "
            f"volume_error={s.volume_error:.4f}"
        )


def unpack(dest: Path, archive: Path = ARCHIVE) -> Path:
    """Extract the fixture into `dest` (once: a marker file says it is complete)."""
    marker = dest / ".unpacked"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        marker.touch()
    return dest


def score_folder(predictions: Path, root: Path) -> list[RoiVerdict]:
    """Score `<predictions>/<roi>.nii.gz` against ground truth; the grid must match to 1e-4 mm."""
    verdicts = []
    for truth_path in sorted((root / GROUNDTRUTH).glob("*.nii.gz")):
        roi = truth_path.name.removesuffix(".nii.gz")
        pred_path = predictions / truth_path.name
        if not pred_path.exists():
            verdicts.append(RoiVerdict(roi, None, "no prediction"))
            continue
        truth, pred = nib.load(truth_path), nib.load(pred_path)
        if pred.shape != truth.shape or not np.allclose(pred.affine, truth.affine, atol=1e-4):
            verdicts.append(RoiVerdict(roi, None, f"grid differs: {pred.shape}"))
            continue
        spacing = tuple(float(z) for z in truth.header.get_zooms()[:3])
        verdicts.append(
            RoiVerdict(
                roi,
                score(np.asarray(pred.dataobj) > 0, np.asarray(truth.dataobj) > 0, spacing),
            )
        )
    return verdicts
