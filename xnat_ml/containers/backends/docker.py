"""Run a job in a Docker container through the Docker Engine API (the docker SDK).

The backend job id is the container id, and the container carries the xnat-ml job name and log
directory as labels: a restarted server re-attaches with the id alone, because dockerd, not the
server, owns the container. Output is copied into the job's log directory once the container has
stopped, and `cleanup` removes the container only after that copy, so failed jobs keep their logs.
"""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

import docker
import docker.errors
from docker.types import DeviceRequest

from xnat_ml.containers.backends.base import (
    STDERR_LOG,
    STDOUT_LOG,
    BackendState,
    JobStatus,
    LaunchSpec,
    option_list,
)
from xnat_ml.errors import XnatMlError

LABEL_JOB = "org.xnat-ml.job"
LABEL_LOG_DIR = "org.xnat-ml.log-dir"
LIST_TTL_S = 1.0
CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")


def container_options(
    spec: LaunchSpec,
    network: str | None = None,
    extra_binds: list[str] | tuple = (),
    user: str | None = None,
) -> dict[str, object]:
    """Keyword arguments for `containers.create` that carry out `spec` (the pure part, testable).

    Like the Container Service, the command line runs as `/bin/sh -c`; `override_entrypoint`
    replaces the image's ENTRYPOINT with that shell instead of passing the line to it.
    """
    binds = [
        f"{m.host_path}:{m.container_path}:{'rw' if m.writable else 'ro'}" for m in spec.mounts
    ]
    options: dict[str, object] = {
        "image": spec.image,
        "environment": dict(spec.env),
        "volumes": binds + list(extra_binds),
        "labels": {**spec.labels, LABEL_JOB: spec.job_name, LABEL_LOG_DIR: str(spec.log_dir)},
        "detach": True,
    }
    if spec.override_entrypoint:
        options["entrypoint"] = ["/bin/sh", "-c"]
        options["command"] = [spec.command_line]
    else:
        options["command"] = ["/bin/sh", "-c", spec.command_line]
    optional = {
        "user": user,
        "working_dir": spec.working_dir,
        "nano_cpus": int(spec.limit_cpu * 1e9) if spec.limit_cpu else None,
        "mem_limit": f"{spec.limit_memory_mb}m" if spec.limit_memory_mb else None,
        "mem_reservation": f"{spec.reserve_memory_mb}m" if spec.reserve_memory_mb else None,
        "shm_size": spec.shm_size,
        "network_mode": spec.network or network,
        "ipc_mode": spec.ipc_mode,
        "runtime": spec.runtime,
        "device_requests": (
            [DeviceRequest(count=spec.gpus, capabilities=[["gpu"]])] if spec.gpus else None
        ),
    }
    options.update({key: value for key, value in optional.items() if value is not None})
    return options


class DockerBackend:
    """Options: `docker_url` (default: DOCKER_HOST, else the local socket), `docker_network`
    (network for commands that name none, e.g. "host" to reach an XNAT on loopback),
    `docker_binds` ("host:container[:ro]" strings added to every container) and `docker_user`
    ("uid:gid" to run as; by default the server's own, so the staged folders it bind-mounts are
    writable by the job and what the job writes there is the server's to upload and delete;
    "image" keeps the image's USER)."""

    name = "docker"
    can_reattach = True

    def __init__(
        self,
        work_dir: Path,
        docker_url: str | None = None,
        docker_network: str | None = None,
        docker_binds: list[str] | tuple | str = (),
        docker_user: str | None = None,
        **_options: object,
    ) -> None:
        self.work_dir = Path(work_dir)
        self.url = docker_url or os.environ.get("DOCKER_HOST")
        self.network = docker_network
        self.binds = option_list(docker_binds)
        if docker_user is None:
            docker_user = f"{os.getuid()}:{os.getgid()}"
        self.user = None if docker_user == "image" else docker_user
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._snapshot: tuple[float, dict[str, str]] = (-LIST_TTL_S, {})

    def reaches_loopback(self) -> bool:
        """Only on the host's network, with a daemon on this host (a local socket)."""
        local = self.url is None or self.url.startswith(("unix://", "npipe://"))
        return self.network == "host" and local

    def _docker(self) -> docker.DockerClient:
        if self._client is None:
            try:
                client = docker.DockerClient(base_url=self.url) if self.url else docker.from_env()
                client.ping()
            except docker.errors.DockerException as exc:
                where = self.url or "the default socket"
                raise XnatMlError(
                    f"docker backend: cannot reach dockerd at {where} ({exc})"
                ) from exc
            self._client = client
        return self._client

    def _container(self, job_id: str):
        """The container, or None when dockerd does not know it (or the id is not an id)."""
        if not CONTAINER_ID.fullmatch(job_id):
            return None
        try:
            return self._docker().containers.get(job_id)
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            raise XnatMlError(f"docker job {job_id[:12]}: dockerd failed ({exc})") from exc

    def launch(self, spec: LaunchSpec) -> str:
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        client = self._docker()
        try:
            container = client.containers.create(
                **container_options(spec, self.network, self.binds, self.user)
            )
        except docker.errors.ImageNotFound as exc:
            raise XnatMlError(
                f"job {spec.job_name}: image {spec.image} is not on the Docker host "
                "(build or pull it there first)"
            ) from exc
        except docker.errors.APIError as exc:
            raise XnatMlError(
                f"job {spec.job_name}: dockerd refused the container ({exc.explanation})"
            ) from exc
        try:
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            raise XnatMlError(
                f"job {spec.job_name}: dockerd could not start the container ({exc.explanation})"
            ) from exc
        return container.id

    def _listing(self) -> dict[str, str]:
        """Container id -> state of every xnat-ml container, in one call reused for LIST_TTL_S:
        the server polls each running job twice a second."""
        with self._lock:
            taken, table = self._snapshot
            if time.monotonic() - taken >= LIST_TTL_S:
                try:
                    listed = self._docker().containers.list(
                        all=True, sparse=True, filters={"label": LABEL_JOB}
                    )
                except docker.errors.APIError as exc:
                    raise XnatMlError(f"docker backend: listing containers failed ({exc})") from exc
                table = {c.id: c.attrs.get("State", "") for c in listed}
                self._snapshot = (time.monotonic(), table)
            return table

    def state(self, job_id: str) -> BackendState:
        listed = self._listing().get(job_id)  # full ids only: an abbreviated one is inspected
        if listed == "created":
            return BackendState(JobStatus.PENDING)
        if listed in ("running", "restarting", "paused"):
            return BackendState(JobStatus.RUNNING)
        container = self._container(job_id)  # stopped, or newer than the listing
        if container is None:
            return BackendState(JobStatus.UNKNOWN, reason="no such container on the Docker host")
        state = container.attrs["State"]
        status = state.get("Status")
        if status == "created":
            return BackendState(JobStatus.PENDING)
        if status in ("running", "restarting", "paused"):
            return BackendState(JobStatus.RUNNING)
        self._save_logs(container)
        code = state.get("ExitCode")
        if self._killed_marker(job_id).exists():
            return BackendState(JobStatus.KILLED, exit_code=code, reason="killed on request")
        if state.get("OOMKilled"):
            limit = container.attrs["HostConfig"].get("Memory") or 0
            return BackendState(
                JobStatus.FAILED,
                exit_code=code,
                reason=f"killed for running out of memory (limit {limit // 2**20} MB)",
            )
        if status == "dead" or state.get("Error"):
            reason = state.get("Error") or f"container {status}"
            return BackendState(JobStatus.FAILED, exit_code=code, reason=reason)
        return BackendState(JobStatus.EXITED, exit_code=code)

    def logs(self, job_id: str) -> tuple[str, str]:
        container = self._container(job_id)
        if container is None:
            return "", ""
        return _stream(container, stdout=True), _stream(container, stdout=False)

    def kill(self, job_id: str) -> None:
        container = self._container(job_id)
        if container is None or container.status not in ("created", "running", "restarting"):
            return
        marker = self._killed_marker(job_id)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        try:
            container.kill()
        except docker.errors.APIError as exc:
            container.reload()  # a 409 "not running" means it finished meanwhile: fine
            if container.status in ("running", "restarting"):
                raise XnatMlError(f"docker job {job_id[:12]}: kill failed ({exc})") from exc

    def cleanup(self, job_id: str) -> None:
        container = self._container(job_id)
        if container is not None:
            self._save_logs(container)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        if CONTAINER_ID.fullmatch(job_id):
            self._killed_marker(job_id).unlink(missing_ok=True)

    def _killed_marker(self, job_id: str) -> Path:
        """Kept on disk so a re-attached backend still tells Killed from a plain exit 137."""
        return self.work_dir / "docker-killed" / job_id

    @staticmethod
    def _save_logs(container) -> None:
        log_dir = container.labels.get(LABEL_LOG_DIR)
        if not log_dir:
            return
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        for name, stdout in ((STDOUT_LOG, True), (STDERR_LOG, False)):
            target = Path(log_dir) / name
            partial = target.with_name(f".{name}.partial")
            partial.write_text(_stream(container, stdout=stdout))
            os.replace(partial, target)


def _stream(container, stdout: bool) -> str:
    return container.logs(stdout=stdout, stderr=not stdout).decode(errors="replace")
