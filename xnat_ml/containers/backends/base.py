"""The contract every launch backend (local process, Docker, Slurm) fulfils.

The resolution engine turns a command + wrapper + input values into a `LaunchSpec`; a backend only
runs it and reports on it. Nothing XNAT-specific crosses this line: staging (downloading inputs) and
uploading outputs happen before and after, in the engine, so every backend gets them for free.
"""

from __future__ import annotations

import enum
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"
# What a job run on the host (local, Slurm) takes from the server's environment; nothing else of
# it (XNAT_ML_ADMIN_PASSWORD, cloud keys, ...) ever reaches a job. Docker jobs take none of it:
# the image's own ENV holds their PATH, HOME and locale.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


@dataclass(frozen=True)
class MountSpec:
    """A directory on the launching host made visible to the job at `container_path`."""

    name: str
    container_path: str  # absolute path inside the container, as the command JSON says
    host_path: Path  # staging directory on the host (already filled for input mounts)
    writable: bool


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a backend needs to start one job; built by `xnat_ml.containers.launch`.

    `command_line` is the resolved command line with container paths (run as `/bin/sh -c`).
    Backends that do not isolate the file system (local, Slurm without a container runtime) rewrite
    container paths to `mount.host_path` with `host_command_line()`.
    `env` is the job's whole environment apart from the base a backend adds (`host_env`): the
    command's environment-variables and XNAT_HOST/XNAT_USER/XNAT_PASS (an alias token, which
    backends must not log).
    """

    image: str
    command_line: str
    env: dict[str, str]
    mounts: list[MountSpec]
    job_name: str
    log_dir: Path  # where the backend writes (or copies) stdout.log / stderr.log
    working_dir: str | None = None
    override_entrypoint: bool = True
    limit_cpu: float | None = None  # CPUs (may be fractional)
    limit_memory_mb: int | None = None
    reserve_memory_mb: int | None = None
    shm_size: int | None = None  # bytes
    gpus: int = 0  # Command.gpu_count(): `gpus`, else GPU generic-resources; -1 = all
    generic_resources: dict[str, str] = field(default_factory=dict)
    network: str | None = None
    ipc_mode: str | None = None
    runtime: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def host_command_line(self) -> str:
        """The command line with every mount's container path replaced by its host directory.

        Longest container paths first, so `/output/sub` is not split by a mount at `/output`.
        Only whole path components are replaced (`/inputs` is not touched by a mount `/input`).
        """
        line = self.command_line
        for mount in sorted(self.mounts, key=lambda m: len(m.container_path), reverse=True):
            prefix = mount.container_path.rstrip("/") or "/"
            pattern = re.compile(r"(?<![\w./-])" + re.escape(prefix) + r"(?=/|\s|$|['\";|&)])")
            line = pattern.sub(lambda _m, p=str(mount.host_path): p, line)
        return line

    def host_working_dir(self) -> Path:
        """The host directory behind `working_dir`, for backends that run on the host (local,
        Slurm without a runtime): inside a mount it is that mount's staging directory; a plain
        host path is used as is if it exists; otherwise (or when unset) the log directory."""
        if not self.working_dir:
            return self.log_dir
        for mount in sorted(self.mounts, key=lambda m: len(m.container_path), reverse=True):
            root = mount.container_path.rstrip("/")
            if self.working_dir == root or self.working_dir.startswith(root + "/"):
                return Path(str(mount.host_path) + self.working_dir[len(root) :])
        return Path(self.working_dir) if os.path.isdir(self.working_dir) else self.log_dir

    def host_env(self) -> dict[str, str]:
        """The whole environment of the job on a host backend (local, Slurm): BASE_ENV from the
        server's environment, then `env`, with the server's own scripts (xnat-ml) first on PATH,
        even when the server was started without its venv."""
        env = {key: os.environ[key] for key in BASE_ENV if key in os.environ}
        env.update(self.env)
        path = env.get("PATH", os.defpath)
        env["PATH"] = os.pathsep.join((os.path.dirname(sys.executable), path))
        return env

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / STDOUT_LOG

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / STDERR_LOG


def option_list(value: list[str] | tuple | str) -> list[str]:
    """A backend option that lists things: a JSON list, or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return [item for item in items if item]


def read_logs(log_dir: Path) -> tuple[str, str]:
    """(stdout, stderr) as written to `log_dir` so far; a log not written yet reads as ""."""
    return _read_text(log_dir / STDOUT_LOG), _read_text(log_dir / STDERR_LOG)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class JobStatus(enum.StrEnum):
    """What a backend can say about a job; the engine maps these to XNAT container statuses."""

    PENDING = "Pending"  # accepted by the backend, not yet running (Slurm queue, image pull)
    RUNNING = "Running"
    EXITED = "Exited"  # finished on its own; see exit_code
    KILLED = "Killed"  # stopped by kill()
    FAILED = "Failed"  # the backend itself failed (could not start, node failure, OOM kill)
    UNKNOWN = "Unknown"  # the backend no longer knows the job (e.g. purged from sacct)


@dataclass(frozen=True)
class BackendState:
    status: JobStatus
    exit_code: int | None = None
    reason: str | None = None

    @property
    def finished(self) -> bool:
        return self.status not in (JobStatus.PENDING, JobStatus.RUNNING)


@runtime_checkable
class Backend(Protocol):
    """A place to run jobs: local.LocalBackend, docker.DockerBackend, slurm.SlurmBackend.

    `launch` returns quickly (non-blocking) with a backend job id that is stable across server
    restarts for backends with `can_reattach = True`; the engine polls `state` until finished.
    """

    name: str
    can_reattach: bool

    def launch(self, spec: LaunchSpec) -> str:
        """Start the job; return the backend's job id. Raise XnatMlError if it cannot start."""
        ...

    def state(self, job_id: str) -> BackendState:
        """The job's current state (never raises for an unknown id: returns UNKNOWN)."""
        ...

    def logs(self, job_id: str) -> tuple[str, str]:
        """(stdout, stderr) so far; also written to spec.log_dir when the job finishes."""
        ...

    def kill(self, job_id: str) -> None:
        """Stop the job; a no-op for a job that already finished."""
        ...

    def cleanup(self, job_id: str) -> None:
        """Release what the backend holds for a finished job (container, script); idempotent."""
        ...

    def reaches_loopback(self) -> bool:
        """Whether its jobs share this host's network, so that a server listening on the
        loopback address is reachable from them (server/site.py)."""
        ...
