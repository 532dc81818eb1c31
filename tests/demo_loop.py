"""The one training run of the test session: `python -m xnat_ml.demo` (the whole loop) run once,
on its own archive. With XNAT_ML_TRAIN_QUALITY=1 (as .ci/run sets) it trains for the quality
benchmark's 600 s budget, so the same run shows the quality target; otherwise a short budget,
enough for the tests that check plumbing and agreement rather than quality. Tests read its
output, its summary file and its archive (`serve()` starts a server on it).
XNAT_ML_DEMO_DATA=DIR (a developer's shortcut) copies a finished demo's archive instead of
starting from nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xnat_ml.demo import SUMMARY_FILE
from xnat_ml.server.process import ServerProcess

QUALITY = os.environ.get("XNAT_ML_TRAIN_QUALITY") == "1"
# The quality benchmark's budget (about 116 epochs); otherwise 2 epochs, enough for plumbing.
BUDGET_S = 600 if QUALITY else 10
# A test that may be the first to ask for `demo_loop` pays for the whole run (setup counts).
DEMO_TIMEOUT_S = 3000


@dataclass
class DemoLoop:
    data: Path
    stdout: str
    stderr: str
    summary: dict
    wall_s: float
    first_run: bool  # False with XNAT_ML_DEMO_DATA: the output is a second run's

    def run_again(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """The demo once more on the same archive (no server of the tests may hold it)."""
        return run_demo(self.data, *args, timeout=timeout)

    def serve(self) -> ServerProcess:
        return ServerProcess(self.data)


def run_demo(data: Path, *args: str, timeout: float = DEMO_TIMEOUT_S - 200) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml.demo", "--data", str(data), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="session")
def demo_loop(tmp_path_factory) -> DemoLoop:
    data = tmp_path_factory.mktemp("demo-loop") / "demo-data"
    reuse = os.environ.get("XNAT_ML_DEMO_DATA")
    if reuse:  # a finished demo's archive, copied: the demo runs again there (nothing to train)
        shutil.copytree(reuse, data)
    started = time.monotonic()
    done = run_demo(data, "--train-budget", str(BUDGET_S))
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((data / SUMMARY_FILE).read_text())
    print(f"demo loop: {wall:.0f} s, steps {summary['steps_s']}, Dice {summary['dice']}")
    return DemoLoop(data, done.stdout, done.stderr, summary, wall, first_run=not reuse)
