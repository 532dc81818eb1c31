"""Launch backends, looked up by name so the server and CLI can pick one from configuration.

Each backend class is constructed as `cls(work_dir: Path, **options)` where `work_dir` is a folder
it may use for its own state (scripts, pid files); options come from the server config
(e.g. `docker_url`, `slurm_partition`).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from xnat_ml.containers.backends.base import (
    Backend,
    BackendState,
    JobStatus,
    LaunchSpec,
    MountSpec,
)
from xnat_ml.errors import XnatMlError

BACKENDS = {
    "local": "xnat_ml.containers.backends.local:LocalBackend",
    "docker": "xnat_ml.containers.backends.docker:DockerBackend",
    "slurm": "xnat_ml.containers.backends.slurm:SlurmBackend",
}


def get_backend(name: str, work_dir: Path, **options: object) -> Backend:
    """Instantiate the backend called `name` (one of BACKENDS)."""
    try:
        target = BACKENDS[name]
    except KeyError:
        raise XnatMlError(
            f"backend {name!r}: unknown; choose one of {', '.join(BACKENDS)}"
        ) from None
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise XnatMlError(f"backend {name!r}: not available ({exc})") from exc
    return getattr(module, class_name)(Path(work_dir), **options)


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendState",
    "JobStatus",
    "LaunchSpec",
    "MountSpec",
    "get_backend",
]
