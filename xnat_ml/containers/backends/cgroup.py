"""A cgroup v2 per local job: one write kills every process the job ever started, and the
kernel enforces its CPU and memory limits where the machine delegates those controllers.

The jobs' cgroups live under `<the server's own cgroup>/xnat-ml-jobs/`. On a hybrid (v1 + v2)
host the v2 hierarchy often has no `cpu` or `memory` controller: the cgroup then still contains
and kills the job, and the local backend falls back to CPU affinity and a memory watchdog.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

_JOBS = "xnat-ml-jobs"
PERIOD_US = 100_000


def jobs_root() -> Path | None:
    """The folder this process may create job cgroups in, or None where cgroup v2 is absent,
    read-only, or too old to kill a whole cgroup (`cgroup.kill`, Linux 5.14)."""
    mount = _v2_mount()
    own = _own_v2_path()
    if mount is None or own is None:
        return None
    root = mount / own.lstrip("/") / _JOBS
    try:
        root.mkdir(exist_ok=True)
        probe = root / f"probe-{uuid.uuid4().hex[:8]}"
        probe.mkdir()
        usable = (probe / "cgroup.kill").exists()
        probe.rmdir()
    except OSError:
        return None
    if not usable:
        return None
    _remove_stale(root)
    for folder in (root.parent, root):  # best effort: refused where the host keeps them
        for controller in ("cpu", "memory"):
            try:
                (folder / "cgroup.subtree_control").write_text(f"+{controller}")
            except OSError:
                pass
    return root


def _remove_stale(root: Path, age_s: float = 60.0) -> None:
    """Remove job cgroups emptied long ago: those of jobs that ended while no server watched them
    (a server killed outright). A cgroup that still holds a process refuses the rmdir."""
    for group in root.iterdir():
        try:
            if group.is_dir() and time.time() - group.stat().st_mtime > age_s:
                JobCgroup.at(group).remove(wait_s=0)
        except OSError:
            continue


def controllers(root: Path) -> set[str]:
    """The controllers a job cgroup under `root` gets (of interest here: cpu, memory)."""
    try:
        return set((root / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


class JobCgroup:
    """One job's cgroup: created before the job starts, removed once it is empty."""

    def __init__(self, root: Path, job_name: str) -> None:
        self.path = root / f"{job_name}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    @classmethod
    def at(cls, path: Path) -> JobCgroup:
        """The job cgroup that already exists at `path`."""
        found = cls.__new__(cls)
        found.path = path
        return found

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    def limit(self, cpus: float | None, memory_mb: int | None) -> None:
        """Write `cpu.max` / `memory.max` (whichever the cgroup has); the whole job is OOM-killed
        together (`memory.oom.group`) rather than one process of it."""
        if cpus and (self.path / "cpu.max").exists():
            (self.path / "cpu.max").write_text(f"{int(cpus * PERIOD_US)} {PERIOD_US}")
        if memory_mb and (self.path / "memory.max").exists():
            (self.path / "memory.max").write_text(str(memory_mb * 2**20))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
            (self.path / "memory.oom.group").write_text("1")

    def pids(self) -> list[int]:
        """Every process in the job's cgroup and in any cgroup it made below it."""
        found = []
        for folder, _dirs, _files in os.walk(self.path):
            try:
                found += [int(p) for p in (Path(folder) / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                continue
        return found

    def _populated(self) -> bool:
        try:
            return "populated 1" in (self.path / "cgroup.events").read_text()
        except OSError:
            return False

    def oom_killed(self) -> bool:
        """True if the kernel killed the job for passing `memory.max`."""
        try:
            lines = (self.path / "memory.events").read_text().splitlines()
        except OSError:
            return False
        events = dict(line.split() for line in lines if line.strip())
        return int(events.get("oom_kill", 0)) > 0 or int(events.get("oom_group_kill", 0)) > 0

    def kill(self) -> None:
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            pass

    def remove(self, wait_s: float = 5.0) -> None:
        """Remove the cgroup and any left below it, deepest first, once the processes a kill
        has just signalled are gone (the kernel empties a cgroup asynchronously)."""
        deadline = time.monotonic() + wait_s
        while self._populated() and time.monotonic() < deadline:
            time.sleep(0.01)
        for folder, _dirs, _files in sorted(os.walk(self.path), key=lambda w: -len(w[0])):
            try:
                os.rmdir(folder)
            except OSError:
                pass


def job_cgroup_of(pid: int) -> JobCgroup | None:
    """The job cgroup `pid` is in (a job a previous server process started), if any."""
    mount = _v2_mount()
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    path = next((line[3:] for line in lines if line.startswith("0::")), "")
    if mount is None or f"/{_JOBS}/" not in path:
        return None
    return JobCgroup.at(mount / path.lstrip("/"))


def _v2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "-" in fields and fields[fields.index("-") + 1] == "cgroup2":
            path = Path(fields[4])
            return path if os.access(path, os.W_OK) else None
    return None


def _own_v2_path() -> str | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None
