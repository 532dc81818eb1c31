"""Masks → RTSTRUCT: xnat-ml's writer vs rt-utils, time and fidelity; masks → SEG → masks.

Masks are nilearn's MNI152 grey/white-matter maps (and their union) resampled onto synthetic
series: a square axial one (the case rt-utils is built for), a non-square axial and an oblique
non-square one. Both RTSTRUCTs are read back with xnat-ml's even-odd reader, so the Dice shows
what a converter that follows the standard gets from each file. Times are medians of --repeats
runs in this process; the ratio is xnat-ml / rt-utils (below 1: xnat-ml faster).

    .venv/bin/python benchmarks/bench_writers.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "imaging"), str(ROOT / "tests")]

from mni_masks import GEOMETRIES, brain_series, dice, tissue_masks  # noqa: E402

from xnat_ml.errors import XnatMlError  # noqa: E402
from xnat_ml.imaging.rtstruct import rtstruct_to_masks  # noqa: E402
from xnat_ml.imaging.rtstruct_write import write_rtstruct  # noqa: E402
from xnat_ml.imaging.seg import read_seg  # noqa: E402
from xnat_ml.imaging.seg_write import write_seg  # noqa: E402

GEOMETRIES["axial square"] = (160, 160, 40, (1.0, 1.0), 2.5, np.eye(3))
CASES = ("axial square", "axial non-square", "oblique non-square")


def median_time(action, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def rt_utils_write(series_dir: Path, masks: dict[str, np.ndarray], out: Path) -> Path:
    from rt_utils import RTStructBuilder

    rtstruct = RTStructBuilder.create_new(dicom_series_path=str(series_dir))
    for name, mask in masks.items():
        rtstruct.add_roi(mask=mask.transpose(1, 0, 2).copy(), name=name)  # rt-utils: rows first
    rtstruct.save(str(out))
    return out


def fidelity(path: Path, series, masks: dict[str, np.ndarray]) -> str:
    """Lowest Dice over the ROIs, read back by xnat-ml; contours of fewer than 3 points (which
    rt-utils writes for single pixels and xnat-ml's reader refuses) are dropped first and
    counted."""
    ds = pydicom.dcmread(path)
    dropped = 0
    for roi in ds.ROIContourSequence:
        kept = [c for c in roi.get("ContourSequence", []) if int(c.NumberOfContourPoints) >= 3]
        dropped += len(roi.get("ContourSequence", [])) - len(kept)
        roi.ContourSequence = kept
    cleaned = path.with_name(f"cleaned-{path.name}")
    ds.save_as(cleaned)
    try:
        back = rtstruct_to_masks(cleaned, series).masks()
    except XnatMlError as exc:
        return f"unreadable ({exc})"
    lowest = min(dice(masks[name], back.get(name, np.zeros(1))) for name in masks)
    return f"{lowest:.4f}" + (f" ({dropped} contours < 3 points dropped)" if dropped else "")


def measure(case: str, work: Path, repeats: int) -> tuple:
    """One table row: RTSTRUCT by both writers (time, fidelity), SEG (time, exactness)."""
    series = brain_series(work / "series", case)
    masks = tissue_masks(series)
    ours_s, ours = median_time(lambda: write_rtstruct(masks, series, work / "ours.dcm"), repeats)
    try:
        theirs_s, theirs = median_time(
            lambda: rt_utils_write(work / "series", masks, work / "rtutils.dcm"), repeats
        )
        theirs_dice = fidelity(theirs, series, masks)
    except Exception as exc:  # rt-utils fails in its own ways; report, go on
        theirs_s, theirs_dice = float("nan"), f"failed ({type(exc).__name__}: {exc})"
    labels = np.zeros(series.shape, np.uint8)
    labels[masks["grey matter"]], labels[masks["white matter"]] = 1, 2
    segments = {1: ("grey matter", (128, 128, 128)), 2: ("white matter", (250, 250, 250))}
    seg_s, seg = median_time(lambda: write_seg(labels, segments, series, work / "seg.dcm"), repeats)
    back = read_seg(seg, series)
    seg_exact = all(np.array_equal(back[n], labels == v) for v, (n, _) in segments.items())
    ours_dice = fidelity(ours, series, masks)
    return case, series.shape, ours_s, ours_dice, theirs_s, theirs_dice, seg_s, seg_exact


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(case, Path(tmp) / case.replace(" ", "_"), args.repeats) for case in CASES]

    print(f"{'series':20} {'grid':>14} | {'xnat-ml s':>9} {'Dice':>7} | {'rt-utils s':>10} "
          f"{'Dice':>7} | {'ratio':>5} | {'SEG s':>6} exact")  # fmt: skip
    for case, shape, ours_s, ours_dice, theirs_s, theirs_dice, seg_s, seg_exact in rows:
        ratio = ours_s / theirs_s if theirs_s == theirs_s else float("nan")
        print(
            f"{case:20} {'x'.join(map(str, shape)):>14} | {ours_s:9.3f} {ours_dice:>7} | "
            f"{theirs_s:10.3f} {theirs_dice:>7} | {ratio:5.2f} | {seg_s:6.3f} {seg_exact}"
        )
    print("Dice: lowest over grey matter, white matter, brain, read back by xnat-ml's reader.")
    print("ratio: xnat-ml time / rt-utils time for the same masks, measured in this run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
