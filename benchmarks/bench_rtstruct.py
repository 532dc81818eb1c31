"""RTSTRUCT → per-ROI NIfTI on the shared conformance set: xnat-ml vs plastimatch vs rt-utils.

Each tool converts all 7 ROIs (reading the series, rasterising, writing .nii.gz files) in its own
process, as a user runs it; runs are interleaved and repeated, and the median wall time counts.
Peak memory is the child's maximum resident set (wait4). Every tool's output is scored against
the analytic ground truth with the README thresholds.

    .venv/bin/python benchmarks/bench_rtstruct.py [--repeats 3]

Prints the table and the ratio xnat-ml / plastimatch (target <= 1.0); exits 1 only when
xnat-ml fails conformance.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "imaging"), str(ROOT / "tests")]

from conformance import RTSTRUCT, SERIES, score_folder, unpack  # noqa: E402

BIN = Path(sys.executable).parent

# rt-utils has no command line: load, take every ROI mask, save it in the series grid. Its masks
# are (rows, columns, slices) in its own slice order (z of ImagePositionPatient), so the NIfTI
# gets our series affine after a transpose, as a user of rt-utils would have to do.
RT_UTILS_SCRIPT = """
import sys, nibabel as nib, numpy as np
from rt_utils import RTStructBuilder
from xnat_ml.imaging.series import load_series, as_nifti
series_dir, rtstruct, out = sys.argv[1:4]
rt = RTStructBuilder.create_from(dicom_series_path=series_dir, rt_struct_path=rtstruct)
series = load_series(series_dir)
for name in rt.get_roi_names():
    mask = rt.get_roi_mask_by_name(name).transpose(1, 0, 2).astype(np.uint8)
    nib.save(as_nifti(mask, series), f"{out}/{name}.nii.gz")
"""


# The same `convert rtstruct` handler behind a parser holding only the imaging verbs: what the
# command costs without the import time of the other verb modules `xnat-ml` registers.
IMAGING_ONLY_SCRIPT = """
import argparse, sys
from xnat_ml.imaging.cli import register
parser = argparse.ArgumentParser()
register(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def commands(root: Path, out: Path) -> dict[str, list[str]]:
    rtstruct, series = str(root / RTSTRUCT), str(root / SERIES)
    convert = ["convert", "rtstruct", rtstruct, "--series", series, "--out", str(out)]
    return {
        "xnat-ml": [str(BIN / "xnat-ml"), *convert],
        "xnat-ml*": [sys.executable, "-c", IMAGING_ONLY_SCRIPT, *convert],
        "plastimatch": [str(BIN / "plastimatch"), "convert", "--input", rtstruct,
                        "--referenced-ct", series, "--output-prefix", str(out),
                        "--prefix-format", "nii.gz", "--xor-contours"],
        "rt-utils": [sys.executable, "-c", RT_UTILS_SCRIPT, series, rtstruct, str(out)],
    }  # fmt: skip


def run(argv: list[str], out: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one conversion into a fresh `out`."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        message = proc.stderr.read().decode(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {' | '.join(message)}")
    proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-rtstruct-"))
    try:
        root = unpack(work / "fixture")
        tools = list(commands(root, work))
        outs = {name: work / f"out-{i}" for i, name in enumerate(tools)}
        times: dict[str, list[float]] = {name: [] for name in tools}
        peaks: dict[str, float] = {name: 0.0 for name in tools}
        for _ in range(args.repeats):
            for name in tools:
                argv = commands(root, outs[name])[name]
                seconds, peak = run(argv, outs[name])
                times[name].append(seconds)
                peaks[name] = max(peaks[name], peak)

        print(f"RTSTRUCT conformance set, 7 ROIs, 512x512x200; median of {args.repeats} runs")
        print(f"{'tool':12s} {'median s':>9s} {'min s':>7s} {'peak MiB':>9s}  conformance")
        verdicts = {}
        for name in tools:
            verdicts[name] = score_folder(outs[name], root)
            passed = sum(v.passed for v in verdicts[name])
            failed = ", ".join(v.roi for v in verdicts[name] if not v.passed)
            print(
                f"{name:12s} {statistics.median(times[name]):9.2f} {min(times[name]):7.2f} "
                f"{peaks[name]:9.0f}  {passed}/7 pass" + (f" (fails: {failed})" if failed else "")
            )
        for name in tools:
            print(f"\n{name}:")
            print("\n".join("  " + v.line() for v in verdicts[name]))
        median = {name: statistics.median(times[name]) for name in tools}
        print("\n* xnat-ml*: the same convert handler with only the imaging verbs imported")
        for name in ("xnat-ml", "xnat-ml*"):
            ratio = median[name] / median["plastimatch"]
            target = "met" if ratio <= 1.0 else "MISSED"
            print(f"ratio {name} / plastimatch: {ratio:.2f} (target <= 1.0: {target})")
        print(f"ratio xnat-ml / rt-utils: {median['xnat-ml'] / median['rt-utils']:.2f}")
        return 0 if all(v.passed for v in verdicts["xnat-ml"]) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
