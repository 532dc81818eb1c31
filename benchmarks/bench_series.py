"""DICOM series → NIfTI: `xnat-ml convert series` vs dcm2niix, time and geometric agreement.

Series: the conformance CT (512x512x200) and synthetic ones that break naive converters
(oblique, non-square, anisotropic, shuffled file names, reversed InstanceNumber). For each, both
tools convert in their own process (median of --repeats runs); the outputs are compared in world
space: dcm2niix may store the array flipped or permuted, so its voxel axes are mapped onto ours
through the two affines, then the affine difference (mm) and the voxel values are compared.

    .venv/bin/python benchmarks/bench_series.py [--dcm2niix PATH] [--repeats 3]

dcm2niix is not a dependency (`pip install dcm2niix` provides it); without it only xnat-ml runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "imaging"), str(ROOT / "tests")]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rtstruct import IMAGING_ONLY_SCRIPT  # noqa: E402
from conformance import SERIES, unpack  # noqa: E402
from dicom_factory import write_series  # noqa: E402

BIN = Path(sys.executable).parent


def synthetic(work: Path) -> dict[str, Path]:
    c, s = np.cos(np.radians(25)), np.sin(np.radians(25))
    oblique = (c, s, 0.0, -s * 0.2, c * 0.2, -0.9797959)
    norm = np.linalg.norm(oblique[3:])
    oblique = oblique[:3] + tuple(v / norm for v in oblique[3:])
    info = write_series(
        work / "oblique",
        rows=160,
        columns=224,
        slices=60,
        pixel_spacing=(0.8, 1.2),
        slice_spacing=3.0,
        orientation=oblique,
        origin=(-80.0, 30.0, 12.0),
        shuffle_names=True,
        instance_numbers="reverse",
        pixels=lambda k: (np.arange(160 * 224).reshape(160, 224) * 7 + k * 13) % 3000,
    )
    return {"oblique 224x160x60": info.folder}


def world_aligned(reference: nib.Nifti1Image, other: nib.Nifti1Image) -> np.ndarray:
    """`other`'s array permuted/flipped onto `reference`'s voxel axes (via the affines)."""
    mapping = np.linalg.inv(other.affine) @ reference.affine  # ours (i,j,k) → theirs
    axes = np.argmax(np.abs(mapping[:3, :3]), axis=0)
    data = np.asarray(other.dataobj)
    while data.ndim > 3:
        data = data[..., 0]
    data = np.transpose(data, axes)
    for ours, theirs in enumerate(axes):
        if mapping[theirs, ours] < 0:
            data = np.flip(data, axis=ours)
    return data


def reoriented_affine(reference: nib.Nifti1Image, other: nib.Nifti1Image) -> np.ndarray:
    """`other`'s affine expressed for `reference`'s voxel order (after world_aligned)."""
    mapping = np.linalg.inv(other.affine) @ reference.affine
    rounded = np.round(mapping)
    return other.affine @ rounded


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    search = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # the venv's dcm2niix first
    parser.add_argument("--dcm2niix", default=shutil.which("dcm2niix", path=search))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-series-"))
    try:
        cases = {"conformance CT 512x512x200": unpack(work / "fixture") / SERIES}
        cases.update(synthetic(work))
        print(f"{'series':28s} {'xnat-ml s':>9s} {'xnat-ml* s':>10s} {'dcm2niix s':>10s} "
              f"{'ratio':>6s} {'ratio*':>6s} {'affine max |diff| mm':>20s}  voxels")  # fmt: skip
        for name, folder in cases.items():
            ours = work / "ours.nii.gz"
            convert = ["convert", "series", str(folder), "--out", str(ours)]
            full, lean = [], []
            for _ in range(args.repeats):
                full.append(timed([str(BIN / "xnat-ml"), *convert]))
                lean.append(timed([sys.executable, "-c", IMAGING_ONLY_SCRIPT, *convert]))
            line = f"{name:28s} {statistics.median(full):9.2f} {statistics.median(lean):10.2f} "
            if not args.dcm2niix:
                print(line + "(dcm2niix not found)")
                continue
            theirs_dir = work / "d2n"
            times = []
            for _ in range(args.repeats):
                shutil.rmtree(theirs_dir, ignore_errors=True)
                theirs_dir.mkdir()
                times.append(
                    timed(
                        [args.dcm2niix, "-z", "y", "-f", "img", "-o", str(theirs_dir), str(folder)]
                    )  # fmt: skip
                )
            a = nib.load(ours)
            b = nib.load(next(theirs_dir.glob("img*.nii.gz")))
            diff = np.abs(reoriented_affine(a, b) - a.affine).max()
            same = np.array_equal(np.asarray(a.dataobj), world_aligned(a, b))
            reference = statistics.median(times)
            print(
                line + f"{reference:10.2f} {statistics.median(full) / reference:6.2f} "
                f"{statistics.median(lean) / reference:6.2f} {diff:20.2e}  "
                + ("identical" if same else "DIFFER")
            )
        print("* xnat-ml*: the same convert handler with only the imaging verbs imported")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
