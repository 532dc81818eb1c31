"""The local backend: container paths mapped to staging folders, exit codes, kill, orphans."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from xnat_ml.containers.backends import JobStatus, LaunchSpec, MountSpec, get_backend
from xnat_ml.containers.backends.base import read_logs
from xnat_ml.errors import XnatMlError


def _spec(tmp_path: Path, line: str) -> LaunchSpec:
    mounts = []
    for name, path in (("in", "/input"), ("out", "/output"), ("sub", "/output/sub")):
        host = tmp_path / name
        host.mkdir(exist_ok=True)
        mounts.append(MountSpec(name, path, host, writable=name != "in"))
    return LaunchSpec(image="unused", command_line=line, env={"XNAT_USER": "alias"},
                      mounts=mounts, job_name=f"t-{time.monotonic_ns()}",
                      log_dir=tmp_path / "logs")  # fmt: skip


def _wait(backend, job_id: str):
    deadline = time.monotonic() + 30
    while not (state := backend.state(job_id)).finished:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return state


def test_container_paths_become_staging_folders(tmp_path: Path):
    spec = _spec(tmp_path, "cat /input/a > /output/sub/b; echo '/inputs' \"/output\" --o=/output/x")
    line = spec.host_command_line()
    assert f"cat {tmp_path}/in/a > {tmp_path}/sub/b;" in line
    assert "'/inputs'" in line  # another path that only starts like a mount is left alone
    assert f'"{tmp_path}/out"' in line and f"--o={tmp_path}/out/x" in line


def test_host_working_dir_and_logs_shared_by_host_backends(tmp_path: Path):
    """What local and Slurm both need lives on the spec and in base: no backend borrows another's
    private helpers."""
    spec = _spec(tmp_path, "true")
    assert spec.host_working_dir() == spec.log_dir  # none given
    assert replace(spec, working_dir="/output/sub/deep").host_working_dir() == tmp_path / "sub/deep"
    assert replace(spec, working_dir="/output").host_working_dir() == tmp_path / "out"
    assert replace(spec, working_dir="/outputs").host_working_dir() == spec.log_dir  # not a mount
    assert replace(spec, working_dir=str(tmp_path)).host_working_dir() == tmp_path
    assert read_logs(spec.log_dir) == ("", "")  # nothing written yet
    spec.log_dir.mkdir()
    spec.stdout_path.write_bytes(b"out \xff")
    assert read_logs(spec.log_dir) == ("out \ufffd", "")


def test_exit_codes_logs_and_env(tmp_path: Path):
    backend = get_backend("local", tmp_path / "work")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a").write_text("payload")
    spec = _spec(tmp_path, "cat /input/a > /output/b; echo $XNAT_USER; echo oops >&2; exit 4")
    job = backend.launch(spec)
    state = _wait(backend, job)
    assert (state.status, state.exit_code) == (JobStatus.EXITED, 4)
    assert backend.logs(job) == ("alias\n", "oops\n")
    assert (tmp_path / "out" / "b").read_text() == "payload"
    assert backend.state("local-1-unknown").status == JobStatus.UNKNOWN


def test_kill_stops_the_whole_pipeline(tmp_path: Path):
    backend = get_backend("local", tmp_path / "work")
    job = backend.launch(_spec(tmp_path, "sleep 30 | cat; echo never > /output/x"))
    time.sleep(0.2)
    backend.kill(job)
    assert _wait(backend, job).status == JobStatus.KILLED
    assert not (tmp_path / "out" / "x").exists()


def test_orphans_are_found_by_their_marker_only(tmp_path: Path):
    first = get_backend("local", tmp_path / "work")
    job = first.launch(_spec(tmp_path, "sleep 30"))
    later = get_backend("local", tmp_path / "work")  # as after a server restart
    assert later.state(job).status == JobStatus.UNKNOWN
    pid = int(job.split("-")[1])
    # Popen returns after fork; until the child execs, /proc shows the parent's environment
    deadline = time.monotonic() + 10
    while b"XNAT_ML_LOCAL_JOB=" not in Path(f"/proc/{pid}/environ").read_bytes():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    forged = f"local-{pid}-someone-else"
    assert later.stop_orphan(forged) is False
    assert later.stop_orphan(job) is True
    assert _wait(first, job).status in (JobStatus.EXITED, JobStatus.KILLED)


def test_local_slots_hold_further_jobs_until_one_ends(tmp_path: Path):
    """With local_slots=1 a second launch waits (the server's staging worker holds it, the job
    stays Created) until the running job's process has ended; a bad value is one line."""
    backend = get_backend("local", tmp_path / "work", local_slots=1)
    (tmp_path / "first").mkdir()
    first = backend.launch(_spec(tmp_path / "first", "sleep 1.5"))
    second: list[str] = []
    (tmp_path / "second").mkdir()
    waiting = threading.Thread(
        target=lambda: second.append(backend.launch(_spec(tmp_path / "second", "true"))))
    waiting.start()
    waiting.join(0.7)
    assert not second and backend.state(first).status == JobStatus.RUNNING
    waiting.join(30)
    assert backend.state(first).finished and second
    assert _wait(backend, second[0]).exit_code == 0
    for bad in (0, "two", -1):
        with pytest.raises(XnatMlError, match=rf"backend option local_slots={bad!r}: not a whole"):
            get_backend("local", tmp_path / "work", local_slots=bad)
