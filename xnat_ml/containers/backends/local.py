"""Run a job as a local process (`/bin/sh -c`) on the server's host, contained (`containment.py`).

The process gets only `LaunchSpec.host_env()` (a short base list, the command's variables and
the job's token) plus the marker below, never the rest of the server's environment. No image: the
command's container paths are rewritten to the staging directories (`LaunchSpec.host_command_line`).
Every process the job starts, `setsid` ones included, dies when the job ends or is killed; its CPU
and memory limits hold; with `local_user` it runs as that user and cannot see the server's data
folder. A local job cannot outlive the server that owns it, hence `can_reattach = False`: after a
restart the engine marks such jobs Failed.

Options: `local_user` (run jobs as this user; needs a root server with `unshare`), `local_hide`
(folders covered in each job's mount namespace, a JSON list or comma-separated; the server passes
its data folder), `local_slots` (how many jobs run at once, default `default_slots()`: a batch of
50 started at once on a 2-core host starved the server until jobs timed out; the rest wait,
Created, each holding a staging worker, until a running job ends).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from xnat_ml.containers.backends.base import (
    BackendState,
    JobStatus,
    LaunchSpec,
    option_list,
    read_logs,
)
from xnat_ml.containers.backends.cgroup import job_cgroup_of
from xnat_ml.containers.backends.containment import MARKER, Containment, JobGuard
from xnat_ml.errors import XnatMlError

_OOM = "killed for running out of memory (limit {} MB)"  # as the Docker backend says it
KILL_GRACE_S = 10.0
WATCH_S = 0.2  # how often the memory watchdog reads the job's memory


@dataclass
class _Job:
    proc: subprocess.Popen
    spec: LaunchSpec
    guard: JobGuard
    done: threading.Event = field(default_factory=threading.Event)
    killed: bool = False
    reason: str | None = None  # set when the backend itself ended the job (memory)


def default_slots() -> int:
    """Jobs at once by default: the host's CPUs, at least 4 (a job mostly waits on the server
    at its start and end, so a few more than the CPUs keep them busy)."""
    return max(4, os.cpu_count() or 1)


class LocalBackend:
    name = "local"
    can_reattach = False

    def __init__(
        self,
        work_dir: Path,
        local_user: str | None = None,
        local_hide: list[str] | tuple | str = (),
        local_slots: int | str | None = None,
        **_options: object,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.containment = Containment(local_user, option_list(local_hide))
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        try:
            slots = default_slots() if local_slots in (None, "") else int(local_slots)
        except (TypeError, ValueError):
            slots = 0
        if slots < 1:
            raise XnatMlError(f"backend option local_slots={local_slots!r}: not a whole number "
                              "of jobs ≥ 1")  # fmt: skip
        self._slots = threading.BoundedSemaphore(slots)

    def reaches_loopback(self) -> bool:
        return True  # a process on this host

    def describe(self) -> str:
        return self.containment.describe()

    def launch(self, spec: LaunchSpec) -> str:
        """Start the job once a slot is free (waits while `local_slots` jobs run)."""
        self._slots.acquire()
        try:
            return self._start(spec)
        except BaseException:
            self._slots.release()
            raise

    def _start(self, spec: LaunchSpec) -> str:
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            guard = self.containment.guard(spec)
        except OSError as exc:
            raise XnatMlError(f"job {spec.job_name}: cannot prepare its cgroup ({exc})") from exc
        try:
            guard.give_folders()
            with open(spec.stdout_path, "wb") as out, open(spec.stderr_path, "wb") as err:
                proc = subprocess.Popen(
                    guard.argv(spec.host_command_line()),
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    cwd=guard.working_dir(),
                    env=guard.env(spec.host_env()),  # the marker finds an orphan after a restart
                    start_new_session=True,
                )
        except XnatMlError:
            guard.release()
            raise
        except OSError as exc:
            guard.release()
            raise XnatMlError(f"job {spec.job_name}: cannot start a local process ({exc})") from exc
        guard.outer_pid = proc.pid
        job_id = f"local-{proc.pid}-{spec.job_name}"
        job = _Job(proc, spec, guard)
        with self._lock:
            self._jobs[job_id] = job
        threading.Thread(target=self._watch, args=(job,), name=f"xnat-ml-{job_id}",
                         daemon=True).start()  # fmt: skip
        return job_id

    def _watch(self, job: _Job) -> None:
        """Wait for the job's first process; meanwhile hold it to its memory limit where no
        cgroup does; then kill whatever it left behind, before the job counts as finished."""
        limit = job.guard.watch_memory_mb
        try:
            while True:
                try:
                    job.proc.wait(timeout=WATCH_S if limit else None)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if limit and not job.reason and job.guard.memory_mb() > limit:
                    job.reason = _OOM.format(limit)
                    job.guard.kill_all()
        finally:
            if job.guard.oom_killed():  # memory.max did it: read before the cgroup goes
                job.reason = _OOM.format(job.spec.limit_memory_mb)
            job.guard.release()
            job.done.set()
            self._slots.release()

    def state(self, job_id: str) -> BackendState:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            return BackendState(JobStatus.UNKNOWN, reason="no such local process (server restart?)")
        if not job.done.is_set():
            return BackendState(JobStatus.RUNNING)
        code = job.proc.returncode
        if job.killed:
            return BackendState(JobStatus.KILLED, exit_code=code, reason="killed on request")
        if job.reason:
            return BackendState(JobStatus.FAILED, exit_code=code, reason=job.reason)
        if code < 0:
            return BackendState(
                JobStatus.EXITED, exit_code=128 - code, reason=f"terminated by signal {-code}"
            )
        return BackendState(JobStatus.EXITED, exit_code=code)

    def logs(self, job_id: str) -> tuple[str, str]:
        with self._lock:
            job = self._jobs.get(job_id)
        return ("", "") if job is None else read_logs(job.spec.log_dir)

    def kill(self, job_id: str) -> None:
        """SIGTERM to each of the job's processes, SIGKILL to all after KILL_GRACE_S."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.done.is_set():
                return
            job.killed = True
        job.guard.signal_all(signal.SIGTERM)
        try:
            job.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            job.guard.kill_all()
        job.done.wait()

    def stop_orphan(self, job_id: str) -> bool:
        """Stop a job a previous server process started, if it still runs; True if it did.

        The pid in the job id is trusted only if that process carries the job's marker in its
        environment, so a recycled pid is never signalled. Its whole cgroup is killed when it has
        one, else its process group (which ends a PID namespace with its first process).
        """
        try:
            _local, pid_text, name = job_id.split("-", 2)
            pid = int(pid_text)
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (ValueError, OSError):
            return False
        if f"{MARKER}={name}".encode() not in environ:
            return False
        group = job_cgroup_of(pid)  # read before the kill: a dead process is in no cgroup
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        finally:
            if group is not None:
                group.kill()
                group.remove()
        return True

    def cleanup(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            job.done.wait()
