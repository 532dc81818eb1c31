"""labels.nii.gz from 7 ROIs on 512x512x200: compose + write, C- and Fortran-ordered masks.

nibabel writes NIfTI in Fortran order, so a C-ordered label array costs a transposing copy and a
strided gzip feed. The reference is the same labels forced into C order and written in this run;
the ratio is compose-output write / C-order write (below 1: faster than a C-ordered array).

    .venv/bin/python benchmarks/bench_labels.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from xnat_ml.imaging.labelmap import compose, load_labelmap, write_labels

SHAPE = (512, 512, 200)
ROIS = ("liver", "spleen", "kidney_l", "kidney_r", "aorta", "tumour", "cyst")


def masks(order: str) -> dict[str, np.ndarray]:
    """Seven overlapping ellipsoids, stored in `order`."""
    x, y, z = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    out = {}
    for i, name in enumerate(ROIS):
        cx, cy, cz = 100 + 45 * i, 150 + 30 * i, 60 + 12 * i
        inside = ((x - cx) / 90.0) ** 2 + ((y - cy) / 70.0) ** 2 + ((z - cz) / 40.0) ** 2 <= 1
        out[name] = np.asarray(inside, order=order)
    return out


def timed(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    series = SimpleNamespace(shape=SHAPE, affine=np.diag([0.8, 0.8, 1.5, 1.0]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        mapping = work / "labels.txt"
        mapping.write_text("".join(f"{n}={i + 1}\n" for i, n in enumerate(ROIS)))
        labelmap = load_labelmap(mapping)
        for order in ("C", "F"):
            rois = masks(order)
            compose_s = timed(lambda r=rois: compose(r, labelmap), args.repeats)
            labels, report = compose(rois, labelmap)
            c_labels = np.ascontiguousarray(labels)
            write_s, ref_s = (
                timed(lambda a=a, r=report: write_labels(a, r, series, work), args.repeats)
                for a in (labels, c_labels)
            )
            layout = "F" if labels.flags.f_contiguous else "C"
            print(f"{order}-ordered masks: compose {compose_s:.2f} s, labels in {layout} order, "
                  f"write {write_s:.2f} s, C-order reference write {ref_s:.2f} s, "
                  f"ratio {write_s / ref_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
