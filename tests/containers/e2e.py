"""Helpers for the end-to-end tests that run the shipped commands on a server's backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.sample.project import build_sample_project
from xnat_ml.xnat import connect

REPO = Path(__file__).resolve().parents[2]
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")
# The image every shipped command names; the tests tag theirs with it.
IMAGE = json.loads((REPO / "command_json/roi-to-mask.json").read_text())["image"]
DOCKERFILE = "container_images/xnat-ml/Dockerfile"
WHEELS = REPO / "container_images/xnat-ml/wheels"
BASE = "xnat-ml-test:debian-python"


def commands_label() -> str:
    """What `make image` passes as XNAT_COMMANDS: the shipped commands as one JSON array."""
    files = sorted(str(p) for p in (REPO / "command_json").glob("*.json"))
    made = subprocess.run([sys.executable, "-m", "xnat_ml", "commands", "label", *files],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return made.stdout.strip()


def build_image(dockerd, base: str = BASE, tag: str = IMAGE):
    """container_images/xnat-ml built offline (no network, wheels from `make wheelhouse`) on
    ``base`` (Debian's python3), tagged as the commands name it; skipped (failed under CI)
    without wheels. ``.build_log`` holds what the build printed."""
    if not any(WHEELS.glob("*.whl")):
        message = f"NO WHEELHOUSE: {WHEELS} has no wheels; run `make wheelhouse`"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    dockerd.import_rootfs(BASE)
    buildargs = {"BASE_IMAGE": base, "XNAT_COMMANDS": commands_label()}
    return _build(dockerd, REPO, DOCKERFILE, tag, buildargs)


def build_torch_base(dockerd, tag: str) -> str:
    """Debian's python3 with CPU torch installed into its system site-packages from the
    wheelhouse: what a CUDA base image (pytorch/pytorch) is to the Dockerfile, without CUDA."""
    if not any(WHEELS.glob("torch-*.whl")):
        pytest.skip(f"NO WHEELHOUSE: {WHEELS} has no torch wheel; run `make wheelhouse`")
    dockerd.import_rootfs(BASE)
    _build(dockerd, WHEELS, str(REPO / "tests/containers/torch-base.Dockerfile"), tag,
           {"BASE_IMAGE": BASE})  # fmt: skip
    return tag


def _build(dockerd, context: Path, dockerfile: str, tag: str, buildargs: dict):
    client = dockerd.client()
    client.api.timeout = 1800  # a RUN step installing torch prints nothing for minutes
    start = time.monotonic()
    log: list[str] = []
    for chunk in client.api.build(
        path=str(context), dockerfile=dockerfile, tag=tag, buildargs=buildargs,
        network_mode="none", rm=True, forcerm=True, decode=True,
    ):  # fmt: skip
        log.append(chunk.get("stream", ""))
        if "error" in chunk:
            pytest.fail(f"{dockerfile}: build failed: {chunk['error']}\n{''.join(log)[-4000:]}")
    seconds = time.monotonic() - start
    client.images.prune(filters={"dangling": True})  # the build stage: wheels, source, venv
    built = client.images.get(tag)
    print(f"\n{tag} built offline in {seconds:.0f} s: {built.attrs['Size'] / 2**20:.0f} MiB")
    built.build_log = "".join(log)
    return built


def tag_as_commands_image(dockerd, image) -> None:
    """Tag `image` as the one the shipped commands name (another module may have tagged the
    bare test image so)."""
    repository, tag = IMAGE.rsplit(":", 1)
    dockerd.client().images.get(image.id).tag(repository, tag)


def backend_setup(request, kind: str) -> tuple[dict, dict]:
    """`--backend-option`s and environment for a server whose jobs run on `kind` (local,
    docker, slurm) with the session's private daemons; a Docker job's image is the test image,
    tagged as the one the commands name."""
    if kind == "docker":
        daemon = request.getfixturevalue("dockerd")
        repository, tag = IMAGE.rsplit(":", 1)
        daemon.client().images.get(daemon.image).tag(repository, tag)
        return {**daemon.backend_options, "docker_binds": json.dumps(daemon.binds)}, {}
    if kind == "slurm":
        return {}, dict(request.getfixturevalue("slurm").env)
    return {}, {}


def start_backend_server(start_xnat_server, name: str, kind: str, options: dict, env: dict):
    """`xnat-ml serve --backend KIND --backend-option key=value ...`; `.backend` names the kind."""
    args = ["--backend", kind]
    for key, value in options.items():
        args += ["--backend-option", f"{key}={value}"]
    server = start_xnat_server(name, args, env)
    server.backend = kind
    return server


def install_enabled(server, project: str, command: dict) -> dict[str, int]:
    """Install a command (or find it) and enable its wrappers site-wide and in the project, as
    an admin and the project's owner do; wrapper name -> id."""
    http = server.session()
    answer = http.post(f"{server.url}/xapi/commands", json=command)
    assert answer.status_code in (201, 409), answer.text
    query = {"name": command["name"], "version": command["version"]}
    [listed] = http.get(f"{server.url}/xapi/commands", params=query).json()
    wrappers = {w["name"]: w["id"] for w in listed["xnat"]}
    for wrapper in wrappers.values():
        for scope in ("", f"/projects/{project}"):
            http.put(f"{server.url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
    return wrappers


def wait_job(server, job_id: int, timeout: float = 180) -> dict:
    http = server.session()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"{server.url}/xapi/containers/{job_id}").json()
        if job["status"] in FINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"container {job_id} still {job['status']} after {timeout} s")


def job_logs(server, job_id: int) -> str:
    url = f"{server.url}/xapi/containers/{job_id}/logs"
    http = server.session()
    return http.get(f"{url}/stdout").text[-2000:] + http.get(f"{url}/stderr").text[-2000:]


def resources(server, uri: str) -> set[str]:
    rows = server.session().get(f"{server.url}{uri}/resources", params={"format": "json"})
    rows.raise_for_status()
    return {row["label"] for row in rows.json()["ResultSet"]["Result"]}


def build_site(server, project: str):
    """The project with the shipped subscriptions installed, then one sample subject built in
    it: the build saves an RTSTRUCT through /xapi/roi, which must set roi-to-mask off."""
    server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
    installed = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "events", "install", "--project", project,
         "--url", server.url, "--user", server.user, "--password", server.password],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    with connect(server.url, server.user, server.password) as session:
        [built] = build_sample_project(session, project, subjects=1)
    return built


def assert_roi_collection_became_masks(server, project: str, built, timeout: float = 300) -> None:
    """Wait for the label map on the ROI collection; then the one roi-to-mask job must be
    Complete and a scan must hold the image NIfTI. A failed job fails at once, with its logs."""
    http = server.session()
    session_uri = f"/data/experiments/{built.session_id}"
    assessors = http.get(f"{server.url}{session_uri}/assessors", params={"format": "json"})
    roi = next(a for a in assessors.json()["ResultSet"]["Result"]
               if a["label"] == built.roi_collection)  # fmt: skip
    deadline = time.monotonic() + timeout
    while LABELMAP_RESOURCE not in resources(server, f"{session_uri}/assessors/{roi['ID']}"):
        jobs = http.get(f"{server.url}/xapi/containers", params={"project": project}).json()
        failed = [j for j in jobs if j["status"] in FINAL and j["status"] != "Complete"]
        assert not failed, [
            (j["status"], j.get("message"), job_logs(server, j["id"])) for j in failed
        ]
        assert time.monotonic() < deadline, f"no label map after {timeout} s; jobs: {jobs}"
        time.sleep(0.5)
    # The label map lands while the job is Finalizing (its outputs being uploaded); it shows
    # Complete once all of them are there and kept.
    while True:
        [job] = http.get(f"{server.url}/xapi/containers", params={"project": project}).json()
        if job["status"] in FINAL or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job["status"] == "Complete" and job["wrapper-name"] == "roi-to-mask-roi-collection"
    scans = http.get(f"{server.url}{session_uri}/scans", params={"format": "json"}).json()
    assert any(
        NIFTI_RESOURCE in resources(server, f"{session_uri}/scans/{scan['ID']}")
        for scan in scans["ResultSet"]["Result"]
    )
