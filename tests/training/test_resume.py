"""A run killed with SIGKILL mid-training resumes from latest.pt when relaunched, and ends where
an unkilled run with the same seed ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from synthetic import tiny_config, write_dataset
from template_paths import REPO, TISSUES

from xnat_ml.training.runner import execute_run, prepare_run

EPOCHS = 4


def _launch(run_dir: Path, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "xnat_ml.training.runner", str(run_dir)],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def _latest_epoch(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("latest_epoch") or 0
    except (OSError, ValueError):
        return 0


def test_killed_run_resumes_from_latest(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    config = tiny_config(epochs=EPOCHS)

    killed = prepare_run(tmp_path / "killed", config, TISSUES, data)
    process = _launch(killed.path, tmp_path / "killed.out")
    deadline = time.monotonic() + 300
    while _latest_epoch(killed.path) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 within 5 minutes"
        time.sleep(0.02)
    assert process.poll() is None, (tmp_path / "killed.out").read_text()[-2000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    died_after = _latest_epoch(killed.path)
    assert 2 <= died_after < EPOCHS
    assert killed.status()["state"] == "running"  # what a dead run leaves behind

    relaunch = _launch(killed.path, tmp_path / "relaunch.out")
    assert relaunch.wait(timeout=300) == 0, (tmp_path / "relaunch.out").read_text()[-2000:]
    status = killed.status()
    assert (status["state"], status["epoch"], status["iteration"]) == ("completed", EPOCHS, EPOCHS)
    log = killed.file("train.log").read_text()
    assert f"resuming run killed at epoch {died_after}, iteration {died_after}" in log
    resumed_rows = killed.metrics()
    assert [int(row["epoch"]) for row in resumed_rows] == list(range(1, EPOCHS + 1))

    reference = prepare_run(tmp_path / "reference", config, TISSUES, data)
    execute_run(reference.path)
    # Same seed, no loader workers, every generator restored: the same numbers.
    for ours, theirs in zip(resumed_rows, reference.metrics(), strict=True):
        for column in ("train_loss", "val_mean_dice"):
            assert abs(float(ours[column]) - float(theirs[column])) < 1e-6, column
