"""A run killed with SIGKILL mid-training resumes from latest.pt when relaunched, and ends where
an unkilled run with the same seed ends; one stopped with SIGTERM says so first."""

from __future__ import annotations

import signal
from pathlib import Path

from runner_process import kill_after_checkpoint, launch
from synthetic import tiny_config, write_dataset
from template_paths import TISSUES

from xnat_ml.training.runner import execute_run, prepare_run

EPOCHS = 4


def test_killed_run_resumes_from_latest(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    config = tiny_config(epochs=EPOCHS)

    killed = prepare_run(tmp_path / "killed", config, TISSUES, data)
    process = launch(killed.path, tmp_path / "killed.out")
    died_after = kill_after_checkpoint(process, killed.path, tmp_path / "killed.out", 2)
    assert 2 <= died_after < EPOCHS
    assert killed.status()["state"] == "running"  # what a dead run leaves behind

    relaunch = launch(killed.path, tmp_path / "relaunch.out")
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


def test_sigterm_writes_killed_and_the_relaunch_completes(tmp_path: Path) -> None:
    """SIGTERM (a Docker stop, a Slurm time limit): the runner writes `killed` with the epoch
    of its last checkpoint, exits 1 with one line, and the relaunch resumes from there."""
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    run = prepare_run(tmp_path / "stopped", tiny_config(epochs=EPOCHS), TISSUES, data)
    out = tmp_path / "stopped.out"
    process = launch(run.path, out)
    kill_after_checkpoint(process, run.path, out, 2, sig=signal.SIGTERM)
    assert process.returncode == 1
    assert out.read_text().splitlines()[-1] == "xnat-ml: error: run stopped: killed by SIGTERM"
    assert "Traceback" not in out.read_text()
    status = run.status()
    assert (status["state"], status["message"]) == ("killed", "killed by SIGTERM")
    assert 2 <= status["latest_epoch"] < EPOCHS
    relaunch = launch(run.path, tmp_path / "relaunch.out")
    assert relaunch.wait(timeout=300) == 0, (tmp_path / "relaunch.out").read_text()[-2000:]
    assert run.status()["state"] == "completed"
    assert f"resuming run stopped at epoch {status['latest_epoch']}" in run.file(
        "train.log").read_text()  # fmt: skip
