"""Run a job as a local process (`/bin/sh -c`) as the server's user.

The process gets only `LaunchSpec.host_env()` (a short base list, the command's variables and
the job's token) plus the marker below, never the rest of the server's environment. No container
isolation: the command's container paths are rewritten to the staging directories
(`LaunchSpec.host_command_line`) and the image is ignored. The child gets its own process group so
`kill` stops the whole pipeline. A local job cannot outlive the server that owns it, hence
`can_reattach = False`: after a restart the engine marks such jobs Failed."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

from xnat_ml.containers.backends.base import BackendState, JobStatus, LaunchSpec, read_logs
from xnat_ml.errors import XnatMlError

_MARKER = "XNAT_ML_LOCAL_JOB"


class LocalBackend:
    name = "local"
    can_reattach = False

    def __init__(self, work_dir: Path, **_options: object) -> None:
        self.work_dir = Path(work_dir)
        self._procs: dict[str, subprocess.Popen] = {}
        self._killed: set[str] = set()
        self._specs: dict[str, LaunchSpec] = {}
        self._lock = threading.Lock()

    def reaches_loopback(self) -> bool:
        return True  # a process on this host

    def launch(self, spec: LaunchSpec) -> str:
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        cwd = spec.host_working_dir()
        env = spec.host_env()
        env[_MARKER] = spec.job_name  # lets a restarted server find (and stop) an orphan
        try:
            with open(spec.stdout_path, "wb") as out, open(spec.stderr_path, "wb") as err:
                proc = subprocess.Popen(
                    ["/bin/sh", "-c", spec.host_command_line()],
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                )
        except OSError as exc:
            raise XnatMlError(f"job {spec.job_name}: cannot start a local process ({exc})") from exc
        job_id = f"local-{proc.pid}-{spec.job_name}"
        with self._lock:
            self._procs[job_id] = proc
            self._specs[job_id] = spec
        return job_id

    def state(self, job_id: str) -> BackendState:
        with self._lock:
            proc = self._procs.get(job_id)
            killed = job_id in self._killed
        if proc is None:
            return BackendState(JobStatus.UNKNOWN, reason="no such local process (server restart?)")
        code = proc.poll()
        if code is None:
            return BackendState(JobStatus.RUNNING)
        if killed:
            return BackendState(JobStatus.KILLED, exit_code=code, reason="killed on request")
        if code < 0:
            return BackendState(
                JobStatus.EXITED, exit_code=128 - code, reason=f"terminated by signal {-code}"
            )
        return BackendState(JobStatus.EXITED, exit_code=code)

    def logs(self, job_id: str) -> tuple[str, str]:
        with self._lock:
            spec = self._specs.get(job_id)
        if spec is None:
            return "", ""
        return read_logs(spec.log_dir)

    def kill(self, job_id: str) -> None:
        with self._lock:
            proc = self._procs.get(job_id)
            if proc is None or proc.poll() is not None:
                return
            self._killed.add(job_id)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass

    def stop_orphan(self, job_id: str) -> bool:
        """Stop a job a previous server process started, if it still runs; True if it did.

        The pid in the job id is trusted only if that process carries the job's marker in its
        environment, so a recycled pid is never signalled.
        """
        try:
            _local, pid_text, name = job_id.split("-", 2)
            pid = int(pid_text)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (ValueError, OSError):
            return False
        if f"{_MARKER}={name}".encode() not in environ:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    def cleanup(self, job_id: str) -> None:
        with self._lock:
            proc = self._procs.pop(job_id, None)
            self._specs.pop(job_id, None)
            self._killed.discard(job_id)
        if proc is not None and proc.poll() is None:
            proc.wait()
