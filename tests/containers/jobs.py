"""Jobs for the backend tests: a LaunchSpec with staged /input and /output, a shipped command
resolved into the LaunchSpec a server would launch, and polling."""

from __future__ import annotations

import time
from pathlib import Path

from xnat_ml.containers.archive import ArchiveClient
from xnat_ml.containers.backends import BackendState, JobStatus, LaunchSpec, MountSpec
from xnat_ml.containers.command import load_command
from xnat_ml.containers.installed import without_gpus
from xnat_ml.containers.launch import build_spec, stage
from xnat_ml.containers.resolve import resolve

REPO = Path(__file__).resolve().parents[2]
TRAIN = REPO / "command_json" / "train.json"


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


class OneProject(ArchiveClient):
    """An archive of one empty project: enough to resolve a project-level command offline."""

    def __init__(self, project: str) -> None:
        self.project = project

    def load(self, kind: str, uri: str, children: bool = True) -> dict:
        assert kind == "Project", kind
        uri = f"/archive/projects/{self.project}"
        return {"id": self.project, "label": self.project, "xsiType": "xnat:projectData",
                "uri": uri, "resources": []}  # fmt: skip


def project_command_spec(command: dict, values: dict, root: Path) -> LaunchSpec:
    """The LaunchSpec the Container Service builds for `command`'s first (project) wrapper,
    launched in project P with `values`: resolution, staged mounts under root, resources."""
    loaded = load_command(command)
    wrapper = loaded.xnat[0]
    archive = OneProject("P")
    resolution = resolve(loaded, wrapper, {"project": "/archive/projects/P", **values},
                         archive, project="P")  # fmt: skip
    mounts = stage(resolution, archive, root)
    return build_spec(resolution, mounts, {}, f"{loaded.name}-test", root / "logs")


def cpu_site_copy(command: dict, memory_mb: int = 4096, cpus: int = 2) -> dict:
    """The copy an admin of a site without GPUs installs (`commands install --cpu-only`: no GPU
    request, no nvidia runtime), with limits its nodes
    can give (Slurm refuses a job asking for more memory or CPUs than any node has)."""
    copy = without_gpus(command)
    return {**copy, "reserve-memory": min(memory_mb, copy.get("reserve-memory", memory_mb)),
            "limit-memory": memory_mb, "limit-cpu": cpus}  # fmt: skip
