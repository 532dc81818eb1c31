"""How a local job is kept in its box: which of its processes are its own, how all of them die at
its end, and what it may see and use of the host.

Three ways to hold a job's processes, the strongest the host allows chosen once per backend:

- a cgroup v2 per job (`cgroup.py`): every descendant, `setsid` and double-forked ones included,
  is killed by one write; `cpu.max`/`memory.max` where the host delegates those controllers;
- a PID namespace (`unshare --pid --fork --kill-child --mount-proc --mount`, root only): the job's
  first process is the namespace's init, so when it ends (or is killed) the kernel kills the rest;
  its own `/proc` shows no other process of the host (no other job's environment, token
  included), and the server's data folder is covered by an empty file system in its mount
  namespace, with only the job's own folders bound back in;
- else a sweep of the processes carrying the job's marker variable in their environment (a
  process that clears its environment escapes it: the weakest mode, said so in the log).

cgroup and namespace combine when both are there. Limits the cgroup cannot enforce fall back to
CPU affinity (`taskset`, whole CPUs) and a memory watchdog (never RLIMIT_AS: torch reserves
far more virtual memory than it touches).
"""

from __future__ import annotations

import math
import os
import pwd
import shutil
import signal
import subprocess
from pathlib import Path

from xnat_ml.containers.backends import cgroup
from xnat_ml.containers.backends.base import LaunchSpec
from xnat_ml.errors import XnatMlError

MARKER = "XNAT_ML_LOCAL_JOB"
_UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]
_STAGE = "/mnt"  # where the job's own folders wait while the data folder is covered
# Runs as the namespace's init before the job: covers $2 with an empty tmpfs and binds the folders
# listed up to "--" back at their own paths, then becomes the rest of its arguments.
_COVER = r"""set -e; umask 022
STAGE=$1; hide=$2; shift 2
mount -t tmpfs -o mode=0700,size=64k xnat-ml-stage "$STAGE"
i=0; keep=""
while [ "$1" != "--" ]; do
  i=$((i+1)); mkdir "$STAGE/$i"; mount --rbind "$1" "$STAGE/$i"
  keep="$keep$i $1
"
  shift
done
shift
mount -t tmpfs -o mode=0755,size=64k xnat-ml-hidden "$hide"
printf %s "$keep" | while read -r i k; do mkdir -p "$k"; mount --move "$STAGE/$i" "$k"; done
umount "$STAGE"
exec "$@"
"""
# The namespace's init: the kernel gives an init only the signals it handles, so this one runs
# the job as its child and passes SIGTERM on (a kill's grace period), then exits with its status.
_INIT = r"""trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
"$@" &
child=$!
while :; do
  wait "$child"; status=$?
  kill -0 "$child" 2>/dev/null || exit $status
done
"""


class Containment:
    """What this host allows, probed once; `guard(spec)` gives each job its own `JobGuard`."""

    def __init__(self, user: str | None = None, hide: list[Path] = ()) -> None:
        self.user = _job_user(user) if user else None
        self.cgroup_root = cgroup.jobs_root()
        self.cgroup_limits = cgroup.controllers(self.cgroup_root) if self.cgroup_root else set()
        self.pidns = _namespaces_work()
        self.hide = _outermost([_folder(p) for p in hide]) if self.pidns else []
        self.taskset = shutil.which("taskset")
        if self.user and not self.pidns:
            raise XnatMlError(
                f"backend local: local_user {user!r} needs the server to run as root with "
                "PID and mount namespaces (`unshare`); they are not available here"
            )
        self._next_cpu = 0

    @property
    def mode(self) -> str:
        held = ["cgroup v2"] if self.cgroup_root else []
        held += ["PID namespace"] if self.pidns else []
        return " + ".join(held) or "process sweep by marker variable (weak: see docs/backends.md)"

    def describe(self) -> str:
        """One line for the server's start-up log."""
        who = self.user.pw_name if self.user else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0 and not self.user:
            who += " (the server's own: --backend-option local_user=USER runs them as USER)"
        cpu = (
            "cpu.max"
            if "cpu" in self.cgroup_limits
            else ("CPU affinity" if self.taskset else "nothing (no taskset here)")
        )
        memory = "memory.max" if "memory" in self.cgroup_limits else "memory watchdog"
        hidden = f"; hidden from jobs: {', '.join(map(str, self.hide))}" if self.hide else ""
        return (
            f"local backend: jobs run code on this host as user {who}; contained by {self.mode}; "
            f"CPU limit by {cpu}, memory limit by {memory}{hidden} "
            "(--backend docker or --backend slurm runs them elsewhere)"
        )

    def guard(self, spec: LaunchSpec) -> JobGuard:
        return JobGuard(self, spec)

    def cpus_for(self, limit: float | None) -> list[int] | None:
        """Whole CPUs for a job limited to `limit`, taken in turn from this process's set."""
        allowed = sorted(os.sched_getaffinity(0))
        if not self.taskset or not limit or math.ceil(limit) >= len(allowed):
            return None
        count = math.ceil(limit)
        start, self._next_cpu = self._next_cpu, (self._next_cpu + count) % len(allowed)
        return [allowed[(start + i) % len(allowed)] for i in range(count)]


class JobGuard:
    """One job's box: the argv that starts it inside, its processes, and how they all end."""

    def __init__(self, containment: Containment, spec: LaunchSpec) -> None:
        self.box = containment
        self.spec = spec
        root, kernel = containment.cgroup_root, containment.cgroup_limits
        self.cgroup = cgroup.JobCgroup(root, spec.job_name) if root else None
        if self.cgroup:
            self.cgroup.limit(spec.limit_cpu, spec.limit_memory_mb)
        self.cpus = None if "cpu" in kernel else containment.cpus_for(spec.limit_cpu)
        self.watch_memory_mb = None if "memory" in kernel else spec.limit_memory_mb
        self.outer_pid: int | None = None
        self._ns_inode: int | None = None

    def argv(self, line: str) -> list[str]:
        """The job's command line wrapped in what contains it, outermost first."""
        argv: list[str] = []
        if self.cgroup:  # the job's first process joins its cgroup before it execs anything
            argv += ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup.procs_file)]
        if self.cpus:
            argv += [self.box.taskset, "-c", ",".join(map(str, self.cpus))]
        if self.box.pidns:
            argv += _UNSHARE
            keep = _outermost(self._own_folders())
            for hide in self.box.hide:
                inside = [str(k) for k in keep if k.is_relative_to(hide)]
                argv += ["/bin/sh", "-c", _COVER, "cover", _STAGE, str(hide), *inside, "--"]
            argv += ["/bin/sh", "-c", _INIT, "init"]
        if self.box.user:
            user = self.box.user
            argv += ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                     "--init-groups", "--no-new-privs", "--"]  # fmt: skip
        return [*argv, "/bin/sh", "-c", line]

    def give_folders(self) -> None:
        """Hand the job's folders to the job user (it writes outputs, reads inputs)."""
        if not self.box.user:
            return
        uid, gid = self.box.user.pw_uid, self.box.user.pw_gid
        for top in _outermost(self._own_folders()):
            self._check_reachable(top)
            os.chown(top, uid, gid)
            os.chmod(top, 0o700)
            for folder, dirs, files in os.walk(top):
                for name in dirs + files:
                    os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)

    def _check_reachable(self, folder: Path) -> None:
        """The job user must pass through every folder above its own that is not covered."""
        user = self.box.user
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
        for above in folder.parents:
            if any(above.is_relative_to(hidden) for hidden in self.box.hide):
                continue
            info = above.stat()
            passes = (
                info.st_mode & 0o001
                or (info.st_uid == user.pw_uid and info.st_mode & 0o100)
                or (info.st_gid in groups and info.st_mode & 0o010)
            )
            if not passes:
                raise XnatMlError(
                    f"job {self.spec.job_name}: {above} is closed to local_user "
                    f"{user.pw_name!r} (it needs o+x to reach {folder})"
                )

    def env(self, env: dict[str, str]) -> dict[str, str]:
        env = {**env, MARKER: self.spec.job_name}
        if self.box.user:
            env["HOME"] = self.box.user.pw_dir
        return env

    def pids(self) -> list[int]:
        """The job's processes now (the wrapper outside a PID namespace included)."""
        if self.cgroup:
            return self.cgroup.pids()
        if self.box.pidns:
            return self._namespace_pids()
        return _marked_pids(self.spec.job_name)

    def signal_all(self, signum: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def kill_all(self) -> None:
        """SIGKILL every process of the job, whatever session or process group it moved to."""
        if self.cgroup:
            self.cgroup.kill()
        elif self.box.pidns:
            # `unshare --kill-child` takes its init down, and the kernel the whole namespace
            if self.outer_pid:
                _kill(self.outer_pid)
        else:
            for _round in range(100):  # a sweep races forks: repeat until nothing is left
                pids = _marked_pids(self.spec.job_name)
                if not pids:
                    return
                for pid in pids:
                    _kill(pid)

    def memory_mb(self) -> float:
        """The job's memory: the sum of its processes' proportional set sizes (pages shared by
        forked workers counted once in all, as a cgroup charges them), else their VmRSS."""
        total_kb = 0
        for pid in self.pids():
            total_kb += _memory_kb(pid)
        return total_kb / 1024

    def oom_killed(self) -> bool:
        return bool(self.cgroup and self.cgroup.oom_killed())

    def release(self) -> None:
        self.kill_all()
        if self.cgroup:
            self.cgroup.remove()

    def working_dir(self) -> Path:
        """The job's working folder, unless the command names a host folder the job may not see
        (a handle on it would outlast the covering): then its log folder."""
        folder = Path(self.spec.host_working_dir()).resolve()
        own = self._own_folders()
        hidden = any(folder.is_relative_to(h) for h in self.box.hide)
        if hidden and not any(folder.is_relative_to(o) for o in own):
            return self.spec.log_dir
        return folder

    def _own_folders(self) -> list[Path]:
        """The job's staging folders and its logs: what it may see and, as local_user, own."""
        spec = self.spec
        return [Path(p).resolve() for p in [m.host_path for m in spec.mounts] + [spec.log_dir]]

    def _namespace_pids(self) -> list[int]:
        if self.outer_pid is None:
            return []
        if self._ns_inode is None:
            try:
                children = Path(f"/proc/{self.outer_pid}/task/{self.outer_pid}/children")
                init = int(children.read_text().split()[0])
                self._ns_inode = os.stat(f"/proc/{init}/ns/pid").st_ino
            except (OSError, ValueError, IndexError):
                return [self.outer_pid]
        found = [self.outer_pid]
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    if os.stat(f"/proc/{entry.name}/ns/pid").st_ino == self._ns_inode:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found


def _job_user(name: str) -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        raise XnatMlError(f"backend local: local_user {name!r}: no such user here") from None
    if os.geteuid() != 0:
        raise XnatMlError(f"backend local: local_user {name!r}: the server must run as root to "
                          "start jobs as another user")  # fmt: skip
    if user.pw_uid == 0:
        raise XnatMlError(f"backend local: local_user {name!r}: must not be root")
    return user


def _folder(path: str | Path) -> Path:
    folder = Path(path).resolve()
    if not folder.is_dir():
        raise XnatMlError(f"backend local: local_hide {str(path)!r}: not a folder")
    return folder


def _namespaces_work() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("mount")):
        return False
    try:
        done = subprocess.run([*_UNSHARE, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and Path(_STAGE).is_dir()


def _outermost(folders: list[Path]) -> list[Path]:
    """The folders not inside another one of the list (binding those binds the rest)."""
    unique = sorted(set(folders), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for folder in unique:
        if not any(folder.is_relative_to(k) for k in kept):
            kept.append(folder)
    return kept


def _marked_pids(job_name: str) -> list[int]:
    wanted = f"{MARKER}={job_name}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in environ:
                found.append(int(entry.name))
    return found


def _memory_kb(pid: int) -> int:
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            text = Path(f"/proc/{pid}/{name}").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
