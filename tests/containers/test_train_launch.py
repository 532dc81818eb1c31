"""`train` launched through the Container Service's launch API on Docker, in the image that
container_images/xnat-ml builds (its own xnat-ml, MONAI and torch: no bind mounts), and on a
one-node Slurm running this checkout's venv; each a two-epoch run on tiny synthetic sessions
that ends Complete with its run in ML_RUNS, and the same on two data-parallel CPU processes
(torchrun inside the job, as several GPUs would run under `--gres`); and a run that keeps its
checkpoint when its job is killed mid-run.

Neither test daemon has a GPU, so each server gets the copy of train.json a site without GPUs
installs (no `generic-resources`, limits a small node can give; docs/training.md); what the
shipped request becomes is checked in test_docker_backend.py and test_slurm_backend.py.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import pytest
from e2e import (
    FINAL,
    install_enabled,
    job_logs,
    start_backend_server,
    tag_as_commands_image,
    wait_job,
)
from jobs import TRAIN, cpu_site_copy

from xnat_ml.server.store.job_writes import ENDED
from xnat_ml.training.project_configs import push_config
from xnat_ml.training.project_files import read_text
from xnat_ml.training.project_models import install_model
from xnat_ml.training.project_runs import run_paths, run_status
from xnat_ml.xnat import connect

# The training tests' project set-up (tests/training is no package, as no test folder is).
sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))
from template_paths import TISSUES  # noqa: E402
from xnat_project import archive_file, set_up, tiny_config  # noqa: E402

RUN, PARALLEL_RUN = "launched", "launched-ddp"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("docker", marks=[pytest.mark.docker, pytest.mark.slow]),
        pytest.param("slurm", marks=[pytest.mark.slurm, pytest.mark.slow]),
    ],
)
def server(request, start_xnat_server):
    """A server whose jobs run on the backend named by the parameter; `.python` is the Python
    version its jobs run (the image's on Docker, this venv's on Slurm)."""
    if request.param == "docker":
        dockerd, image = request.getfixturevalue("dockerd"), request.getfixturevalue("image")
        tag_as_commands_image(dockerd, image)
        options = {"docker_url": dockerd.url, "docker_network": "host"}
        server = start_backend_server(start_xnat_server, "xnat-train-docker", "docker", options, {})
        python = ["python3", "-c", "import platform; print(platform.python_version())"]
        run = dockerd.client().containers.run(image.id, python, network_mode="none", remove=True)
        server.python = run.decode().strip()
    else:
        cluster = request.getfixturevalue("slurm")
        server = start_backend_server(start_xnat_server, "xnat-train-slurm", "slurm", {},
                                      cluster.env)  # fmt: skip
        server.python = platform.python_version()
    return server


@pytest.fixture(scope="module")
def project(server, tmp_path_factory) -> str:
    """Six 16³ labelled sessions, dataset blobs v1, model tissues v1, config `tiny` (2 epochs)."""
    project = f"TRAIN_{server.backend.upper()}"
    server.session().put(f"{server.url}/data/projects/{project}").raise_for_status()
    with connect(server.url, server.user, server.password) as session:
        work = tmp_path_factory.mktemp(project)
        set_up(session, project, work)
        parallel = work / "tiny-ddp.json"
        parallel.write_text(json.dumps(tiny_config(resources={"processes": 2})))
        push_config(session, project, parallel)
    return project


def _start(server, project: str, config: str, run_id: str, http=None) -> int:
    """Launch `train` (as admin, or as ``http``'s user); the job id."""
    command = cpu_site_copy(json.loads(TRAIN.read_text()))
    wrapper = install_enabled(server, project, command)["train-project"]
    launched = (http or server.session()).post(
        f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/root/project/launch",
        json={"project": f"/data/projects/{project}", "CONFIG": config, "RUN_ID": run_id},
    )
    assert launched.status_code == 200, launched.text
    return int(launched.json()["id"])


def _launch(server, project: str, config: str, run_id: str, http=None) -> tuple[int, dict]:
    """Launch `train` and wait; the job id and the job."""
    job_id = _start(server, project, config, run_id, http)
    return job_id, wait_job(server, job_id, timeout=540)


def _launch_train(server, project: str, config: str, run_id: str) -> dict:
    job_id, job = _launch(server, project, config, run_id)
    assert job["status"] == "Complete", (job["status"], job["message"], job_logs(server, job_id))
    with connect(server.url, server.user, server.password) as xnat:
        files = {path.removeprefix(f"{run_id}/") for path in run_paths(xnat, project, run_id)}
        status = run_status(xnat, project, run_id)
        record = json.loads(read_text(xnat, project, "ML_RUNS", f"{run_id}/run.json"))
    assert {"status.json", "run.json", "metrics.csv", "model.pt", "latest.pt"} <= files, files
    return {"status": status, "record": record}


def test_train_launched_on_the_backend_completes_with_its_run(server, project):
    run = _launch_train(server, project, "tiny", RUN)
    status, record = run["status"], run["record"]
    assert (status["state"], status["epoch"], status["iteration"]) == ("completed", 2, 4), status
    assert (record["model"]["name"], record["dataset"]["name"]) == ("tissues", "blobs")
    # Docker ran the image's Python (Debian's), not this venv's.
    assert record["versions"]["python"] == server.python


def test_parallel_train_launched_on_the_backend_completes(server, project):
    """Two processes share each epoch: 4 training cases, batch 2, one iteration an epoch."""
    run = _launch_train(server, project, "tiny-ddp", PARALLEL_RUN)
    status, record = run["status"], run["record"]
    assert (status["state"], status["epoch"], status["iteration"]) == ("completed", 2, 2), status
    assert record["processes"] == 2


def test_code_from_data_never_runs_on_the_backend(server, project, tmp_path):
    """Issue 15's finding 1 on this backend, launched by a Member: a config stored around the CLI
    (raw PUT) with a `$exec` override, and a model version whose train.json was changed on the
    server's disk, are refused by the job before the bundle is parsed; no run is stored. The
    payload would print a line into the job's log (kept after the job, on every backend) and
    create a marker file (seen here on Slurm, which shares this file system)."""
    marker = "/work/MARK-code" if server.backend == "docker" else str(tmp_path / "MARK-code")
    code = f"open({marker!r}, 'w').close(); print('PAYLOAD' + '-RAN', flush=True)"
    hostile = f"$exec({code!r}) or 0.002"
    server.add_user("mallory", "mallory-pw-1", project, "Member")
    member = server.session("mallory", "mallory-pw-1")
    with connect(server.url, server.user, server.password) as xnat:
        install_model(xnat, project, TISSUES, "tampered")
        config = tiny_config()
        config["overrides"] = {**config["overrides"], "optimizer#lr": hostile}
        server.session().put(
            f"{server.url}/data/projects/{project}/resources/ML_CONFIGS/files/evil.json",
            data=json.dumps(config).encode(), params={"overwrite": "true"},
            headers={"Content-Type": "application/octet-stream"},
        ).raise_for_status()  # fmt: skip
        (tmp_path / "tampered.json").write_text(
            json.dumps(tiny_config(model={"name": "tampered", "version": "1"}))
        )
        push_config(xnat, project, tmp_path / "tampered.json")
    on_disk = archive_file(server.data_dir, project, "ML_MODELS", "tampered/v1/configs/train.json")
    train = json.loads(on_disk.read_text())
    on_disk.write_text(json.dumps({**train, "learning_rate": hostile}))
    refusals = {
        "evil": "ML_CONFIGS/evil.json: overrides.optimizer#lr: ",
        "tampered": "model tampered v1: configs/train.json differs from its digest",
    }
    for config_name, message in refusals.items():
        job_id, job = _launch(server, project, config_name, f"code-{config_name}", member)
        logs = job_logs(server, job_id)
        assert job["status"] == "Failed" and message in logs, (job["status"], logs)
        assert "PAYLOAD-RAN" not in logs
    assert not Path(marker).exists()
    with connect(server.url, server.user, server.password) as xnat:
        assert not run_paths(xnat, project, "code-evil") and not run_paths(
            xnat, project, "code-tampered"
        )


def test_killed_train_job_keeps_its_run_on_the_backend(server, project, tmp_path):
    """Issue 15's finding 5 on this backend: a Member's train job, killed through the Container
    Service once a checkpoint reached ML_RUNS, leaves its run there with that checkpoint, and
    another Member may not kill it (403); the relaunch that resumes is tested on the local
    backend (test_train_killed_resumes.py). What the run says depends on the signal:
    - Slurm: scancel sends SIGTERM; the batch script traps it and waits, so xnat-ml records
      `killed by SIGTERM` before the job counts as ended (without the trap the script died at
      once, the job ended, its token went and the run said `failed` in about half the runs).
    - Docker: a kill is `docker kill` (SIGKILL, as XNAT's Container Service does), so the
      runner has no say and the server marks the run `failed` with its reason (ENDED)."""
    (tmp_path / "long.json").write_text(json.dumps(tiny_config(epochs=200)))
    with connect(server.url, server.user, server.password) as xnat:
        push_config(xnat, project, tmp_path / "long.json")
    server.add_user("kim", "kim-pw-1", project, "Member")
    server.add_user("lee", "lee-pw-1", project, "Member")
    launcher, other = server.session("kim", "kim-pw-1"), server.session("lee", "lee-pw-1")
    job_id = _start(server, project, "long", "cut", launcher)
    kill = f"{server.url}/xapi/containers/{job_id}/kill"
    deadline = time.monotonic() + 300
    with connect(server.url, server.user, server.password) as xnat:
        while "cut/latest.pt" not in run_paths(xnat, project, "cut"):
            job = server.session().get(f"{server.url}/xapi/containers/{job_id}").json()
            assert job["status"] not in FINAL, (job, job_logs(server, job_id))
            assert time.monotonic() < deadline, "no checkpoint reached ML_RUNS in 5 minutes"
            time.sleep(0.5)
        refused = other.post(kill)
        assert refused.status_code == 403, refused.text
        killed = launcher.post(kill)
        assert killed.status_code == 200, killed.text
        job = wait_job(server, job_id)
        assert job["status"] == "Killed", (job, job_logs(server, job_id))
        files = {path.removeprefix("cut/") for path in run_paths(xnat, project, "cut")}
        status = run_status(xnat, project, "cut")
    assert {"run.json", "latest.pt", "status.json"} <= files, files
    said = ("failed", ENDED) if server.backend == "docker" else ("killed", "killed by SIGTERM")
    assert (status["state"], status["message"]) == said, (status, job_logs(server, job_id))
    assert status["epoch"] < 200, status  # stopped mid-run
