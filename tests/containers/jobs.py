"""Jobs for the backend tests: a LaunchSpec with staged /input and /output, and polling."""

from __future__ import annotations

import time
from pathlib import Path

from xnat_ml.containers.backends import BackendState, JobStatus, LaunchSpec, MountSpec


def make_spec(root: Path, command_line: str, image: str = "unused", **fields) -> LaunchSpec:
    """A job with /input (read-only, holds in.txt) and /output (writable) staged under root."""
    (root / "in").mkdir(parents=True, exist_ok=True)
    (root / "in" / "in.txt").write_text("payload\n")
    (root / "out").mkdir(exist_ok=True)
    return LaunchSpec(
        image=image,
        command_line=command_line,
        env={"XNAT_HOST": "http://127.0.0.1:1", "XNAT_USER": "alias", "XNAT_PASS": "secret"},
        mounts=[
            MountSpec("in", "/input", root / "in", writable=False),
            MountSpec("out", "/output", root / "out", writable=True),
        ],
        log_dir=root / "logs",
        **{"job_name": f"test-{root.name}", **fields},
    )


def wait_done(backend, job_id: str, timeout: float = 60) -> BackendState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = backend.state(job_id)
        if state.finished:
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {state.status} after {timeout} s")


def wait_running(backend, job_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while backend.state(job_id).status != JobStatus.RUNNING:
        assert time.monotonic() < deadline, "job never started"
        time.sleep(0.1)
