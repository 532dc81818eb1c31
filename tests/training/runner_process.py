"""The runner as a separate process, for the tests that kill it mid-run and relaunch it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from template_paths import REPO


def launch(run_dir: Path, log: Path) -> subprocess.Popen:
    """``python -m xnat_ml.training.runner RUN_DIR`` in a process group of its own."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "xnat_ml.training.runner", str(run_dir)], cwd=REPO,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def latest_epoch(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "status.json").read_text()).get("latest_epoch") or 0
    except (OSError, ValueError):
        return 0


def kill_after_checkpoint(process: subprocess.Popen, run_dir: Path, log: Path, epoch: int,
                          *, group: bool = False, sig: int = signal.SIGKILL) -> int:  # fmt: skip
    """Send ``sig`` to the runner (its whole process group with ``group``) once ``latest.pt``
    holds ``epoch``; the epoch of the checkpoint it left."""
    deadline = time.monotonic() + 300
    while latest_epoch(run_dir) < epoch and process.poll() is None:
        assert time.monotonic() < deadline, f"no checkpoint of epoch {epoch} within 5 minutes"
        time.sleep(0.02)
    assert process.poll() is None, log.read_text()[-3000:]
    if group:
        os.killpg(process.pid, sig)
    else:
        os.kill(process.pid, sig)
    process.wait(timeout=60)
    return latest_epoch(run_dir)
