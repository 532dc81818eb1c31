"""One job's life after resolution: stage inputs, run on a backend, upload outputs.

The same steps serve the server's worker threads and `run_command` (a command run by hand against
any XNAT). Outputs follow the Container Service: a command that exits non-zero uploads nothing
and keeps its logs; every required output is checked before the first upload, each resource goes
up as one atomic zip, and a failed required upload ends the job `Failed (Upload)` with none of
its results in the archive: the server's Container Service undoes every write the job made
with its tokens (server/job_writes.py); run by hand against any XNAT (`undo_created`), the
resources the upload created are deleted again over REST.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xnat_ml import scratch
from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.backends.base import (
    Backend,
    BackendState,
    JobStatus,
    LaunchSpec,
    MountSpec,
)
from xnat_ml.containers.resolve import Resolution, ResolvedOutput
from xnat_ml.errors import XnatMlError

log = logging.getLogger(__name__)


class UploadError(XnatMlError):
    """A required output was missing or could not be uploaded."""


@dataclass
class Outcome:
    status: str  # a jobs.* status
    message: str
    exit_code: int | None = None
    uploaded: list[str] | None = None


def stage(resolution: Resolution, client: ArchiveClient, job_dir: Path) -> list[MountSpec]:
    """Create a directory per mount under job_dir/mounts and download the inputs into it."""
    mounts = []
    for mount in resolution.mounts:
        host = job_dir / "mounts" / mount.name
        host.mkdir(parents=True, exist_ok=True)
        for kind, uri in mount.sources:
            if kind == "file":
                name = uri.rstrip("/").rsplit("/", 1)[-1]
                if name in ("", ".", ".."):
                    raise XnatMlError(f"input file {uri}: no usable file name")
                client.download_file(uri, host / name)
            elif len(mount.sources) == 1 and kind == "resource":
                client.download_resource(uri, host)
            else:  # several resources (an object's): one folder per resource label
                client.download_resource(uri, host / uri.rstrip("/").rsplit("/", 1)[-1])
        mounts.append(MountSpec(mount.name, mount.container_path, host, mount.writable))
    return mounts


def build_spec(
    resolution: Resolution,
    mounts: list[MountSpec],
    env: dict[str, str],
    job_name: str,
    log_dir: Path,
) -> LaunchSpec:
    c = resolution.command
    return LaunchSpec(
        image=c.image or "",
        command_line=resolution.command_line,
        env={**resolution.env, **env},
        mounts=mounts,
        job_name=job_name,
        log_dir=log_dir,
        working_dir=resolution.working_dir,
        override_entrypoint=c.override_entrypoint is not False,
        limit_cpu=c.limit_cpu,
        limit_memory_mb=c.limit_memory,
        reserve_memory_mb=c.reserve_memory,
        shm_size=c.shm_size,
        gpus=c.gpu_count(),
        generic_resources=dict(c.generic_resources),
        network=c.network,
        ipc_mode=c.ipc_mode,
        runtime=c.runtime,
        labels=dict(c.container_labels),
    )


def wait(
    backend: Backend, job_id: str, poll_s: float = 0.5, stop: Callable[[], bool] | None = None
) -> BackendState:
    """Poll until the backend says the job finished (killing it when `stop()` says so)."""
    delay = min(0.1, poll_s)
    while True:
        state = backend.state(job_id)
        if state.finished:
            return state
        if stop is not None and stop():
            backend.kill(job_id)
        time.sleep(delay)
        delay = min(delay * 1.5, poll_s)


def outcome_of(state: BackendState) -> Outcome:
    """The job status a finished backend state stands for."""
    if state.status == JobStatus.KILLED:
        return Outcome("Killed", state.reason or "killed", state.exit_code)
    if state.status == JobStatus.EXITED and state.exit_code == 0:
        return Outcome("Complete", "", 0)
    if state.status == JobStatus.EXITED:
        reason = f"; {state.reason}" if state.reason else ""
        return Outcome(
            "Failed", f"command exited with code {state.exit_code}{reason}", state.exit_code
        )
    return Outcome("Failed", state.reason or f"backend reports {state.status}", state.exit_code)


def save_logs(backend: Backend, job_id: str, log_dir: Path) -> None:
    """Make sure stdout.log/stderr.log exist in log_dir (backends that keep them elsewhere)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stdout, stderr = backend.logs(job_id)
    for name, text in (("stdout.log", stdout), ("stderr.log", stderr)):
        path = log_dir / name
        if text and (not path.exists() or path.stat().st_size == 0):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)


def _matched_files(root: Path, output: ResolvedOutput) -> list[Path]:
    """Files of one output: everything under mount/path, filtered by the glob if any."""
    base = (root / output.path) if output.path else root
    base_resolved = base.resolve()
    if not base_resolved.is_relative_to(root.resolve()):
        raise UploadError(f"output {output.output.name!r}: path {output.path!r} leaves its mount")
    if base.is_file():
        return [base]
    if not base.is_dir():
        return []
    files = []
    inside = root.resolve()
    for path in sorted(base.rglob("*")):
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(inside):
            continue  # a link (or a file behind a linked folder) could point anywhere
        rel = path.relative_to(base).as_posix()
        if output.glob and not (
            fnmatch.fnmatch(rel, output.glob) or fnmatch.fnmatch(path.name, output.glob)
        ):
            continue
        files.append(path)
    return files


def upload_outputs(
    resolution: Resolution, client: ArchiveClient, mounts: dict[str, Path],
    undo_created: bool = True, uploaded_one: Callable[[str], None] | None = None,
) -> list[str]:
    """Upload every handler's files, all required outputs present first; on failure delete
    the resources it created (`undo_created`; the server's job log undoes more).
    `uploaded_one(uri)` is called after each handler's upload (the server's fault point)."""
    plan = []
    for out in resolution.outputs:
        root = mounts.get(out.mount)
        files = _matched_files(root, out) if root is not None else []
        if not files and out.output.required:
            where = "/".join(p for p in (out.mount, out.path, out.glob or "") if p)
            raise UploadError(f"required output {out.output.name!r} produced no files ({where})")
        plan.append((out, files))
    created: list[str] = []
    uploaded: list[str] = []
    parents: dict[str, str] = {}
    try:
        for out, files in plan:
            if not files:
                continue
            parent = out.parent
            if parent.startswith("handler:"):
                parent = parents.get(parent[len("handler:") :], "")
                if not parent:
                    raise UploadError(f"output handler {out.handler.name!r}: its parent failed")
            try:  # optional means "may produce no files"; files it produced must go up
                uri = _upload_one(client, out, files, mounts[out.mount], parent, created)
            except XnatMlError as exc:
                raise UploadError(f"output {out.output.name!r}: {exc}") from exc
            parents[out.handler.name] = uri
            uploaded.append(uri)
            if uploaded_one is not None:
                uploaded_one(uri)
    except XnatMlError:
        for uri in reversed(created) if undo_created else ():
            try:
                client.delete(uri)
            except XnatMlError as exc:
                log.warning("could not remove %s after a failed upload: %s", uri, exc)
        raise
    return uploaded


def _upload_one(
    client: ArchiveClient,
    out: ResolvedOutput,
    files: list[Path],
    mount_root: Path,
    parent: str,
    created: list[str],
) -> str:
    handler = out.handler
    if handler.type == "Resource":
        label = out.label or out.output.name
        existed = client.resource_exists(parent, label)
        base = (mount_root / out.path) if out.path else mount_root
        with _selection(files, base if base.is_dir() else base.parent) as src:
            uri = client.upload_resource(
                parent, label, src, handler.format, handler.content, handler.tags
            )
        if not existed:
            created.append(uri)
        return uri
    xml = [f for f in files if f.suffix.lower() == ".xml"]
    if len(xml) != 1:
        raise UploadError(f"a {handler.type} handler needs exactly one XML file, got {len(xml)}")
    uri = client.upload_xml(parent, handler.type, xml[0])
    created.append(uri)
    return uri


@contextmanager
def _selection(files: list[Path], base: Path) -> Iterator[Path]:
    """A temporary folder holding exactly `files` (hard links where possible), relative to
    `base`: what one output handler uploads, without the rest of the mount."""
    with scratch.temporary("selection-") as tmp:
        root = Path(tmp)
        for path in files:
            rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, dest)
            except OSError:
                shutil.copy2(path, dest)
        yield root


def start(
    resolution: Resolution,
    client: ArchiveClient,
    backend: Backend,
    job_dir: Path,
    env: dict[str, str],
    job_name: str,
) -> tuple[str, dict[str, Path]]:
    """Stage the inputs and launch; the backend's job id and the host folder of each mount."""
    mounts = stage(resolution, client, job_dir)
    spec = build_spec(resolution, mounts, env, job_name, job_dir / "logs")
    return backend.launch(spec), {m.name: m.host_path for m in mounts}


def mount_dirs(resolution: Resolution, job_dir: Path) -> dict[str, Path]:
    """Where `stage` put each mount (to find outputs of a job launched by an earlier process)."""
    return {m.name: job_dir / "mounts" / m.name for m in resolution.mounts}


def complete(
    resolution: Resolution,
    client: ArchiveClient,
    backend: Backend,
    backend_id: str,
    job_dir: Path,
    state: BackendState,
    undo_created: bool = True,
    uploaded_one: Callable[[str], None] | None = None,
) -> Outcome:
    """After the backend finished: keep the logs, release the job, upload if it succeeded."""
    outcome = outcome_of(state)
    save_logs(backend, backend_id, job_dir / "logs")
    backend.cleanup(backend_id)
    if outcome.status != "Complete":
        return outcome
    try:
        uploaded = upload_outputs(
            resolution, client, mount_dirs(resolution, job_dir), undo_created, uploaded_one
        )
    except XnatMlError as exc:
        return Outcome("Failed (Upload)", str(exc), outcome.exit_code)
    message = f"uploaded {len(uploaded)} output(s)" if uploaded else "no output to upload"
    return Outcome("Complete", message, 0, uploaded)


def execute(
    resolution: Resolution,
    client: ArchiveClient,
    backend: Backend,
    job_dir: Path,
    env: dict[str, str],
    job_name: str,
) -> Outcome:
    """Stage, run, wait and upload: the whole job, synchronously (`xnat-ml commands run`)."""
    backend_id, _mounts = start(resolution, client, backend, job_dir, env, job_name)
    return complete(resolution, client, backend, backend_id, job_dir, wait(backend, backend_id))
