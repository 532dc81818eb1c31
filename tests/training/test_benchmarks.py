"""The training benchmarks run: the GPU check on a machine without CUDA, and (opt-in) the
quality target on the demo loop's training run (the `demo_loop` fixture)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from demo_loop import DEMO_TIMEOUT_S

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.mark.slow
def test_gpu_check_falls_back_to_the_cpu(tmp_path: Path) -> None:
    """Without CUDA the check says so, runs every step small on the CPU, and prints one JSON
    object on stdout (nothing else: the bundle's own logging goes to stderr) that it also
    writes under --out."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available: the fallback is not taken here")
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py"), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=540, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CUDA is not available" in done.stderr
    result = json.loads(done.stdout)
    assert result == json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["environment"]["cuda"] is False
    assert result["passed"] == {"overhead": None, "input_pipeline": None}
    for side in ("xnat_ml", "bare"):
        [run] = result["overhead"]["rounds"][side]
        assert run["iterations"] > 0 and run["total_s"] > 0
    feeds = result["input_pipeline"]["feeds"]
    assert len(feeds) == 5 and all(f["iterations_per_s"] > 0 for f in feeds.values())
    assert result["input_pipeline"]["best"] in feeds


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("XNAT_ML_TRAIN_QUALITY") != "1",
    reason="the quality target needs the full training run: set XNAT_ML_TRAIN_QUALITY=1 "
    "(see docs/training.md)",
)
@pytest.mark.timeout(DEMO_TIMEOUT_S)
def test_sample_tissues_reaches_the_target_dice(demo_loop):
    """sample-tissues-cpu on the 12-subject sample project, trained by the demo loop (a 600 s
    budget on 2 idle cores, about 116 epochs): the testing-split Dice that
    `model evaluate` stored, mean over grey and white matter, is >= 0.88 (docs/training.md,
    Performance). benchmarks/bench_train_quality.py measures the curve and time to Dice."""
    dice = demo_loop.summary["dice"]
    print(f"testing Dice {dice} after {demo_loop.summary['steps_s']}")
    assert dice["mean_dice"] >= 0.88, dice
