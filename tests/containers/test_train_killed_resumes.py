"""A training job killed mid-run through the Container Service (the local backend) keeps its run:
ML_RUNS/<run>/ says `killed` over the checkpoints it stored (the job's other writes are undone as
ever: test_job_writes.py). Relaunched with the same run id in a fresh job (an empty work folder),
it resumes from ML_RUNS at that checkpoint and ends with the numbers of a run never killed."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from e2e import install_enabled, job_logs, wait_job
from jobs import TRAIN, cpu_site_copy

from xnat_ml.training.project_configs import push_config
from xnat_ml.training.project_files import read_text
from xnat_ml.training.project_runs import run_paths, run_status
from xnat_ml.xnat import connect

sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))
from xnat_project import set_up, tiny_config  # noqa: E402

EPOCHS = 8
CONFIG = "eight"


def _launch(server, project: str, wrapper: int, run_id: str) -> int:
    launched = server.session().post(
        f"{server.url}/xapi/projects/{project}/wrappers/{wrapper}/root/project/launch",
        json={"project": f"/data/projects/{project}", "CONFIG": CONFIG, "RUN_ID": run_id},
    )
    assert launched.status_code == 200, launched.text
    return int(launched.json()["id"])


def _stored_latest_epoch(xnat, project: str, run_id: str) -> int:
    status = run_status(xnat, project, run_id) or {}
    return status.get("latest_epoch") or 0


def _metrics(xnat, project: str, run_id: str) -> list[dict[str, str]]:
    lines = read_text(xnat, project, "ML_RUNS", f"{run_id}/metrics.csv").splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_killed_training_job_keeps_its_run_and_resumes_from_ml_runs(xnat_server, project,
                                                                     tmp_path):  # fmt: skip
    server = xnat_server
    with connect(server.url, server.user, server.password) as xnat:
        set_up(xnat, project, tmp_path, cases=6)
        config = tmp_path / f"{CONFIG}.json"
        config.write_text(json.dumps(tiny_config(epochs=EPOCHS)))
        push_config(xnat, project, config)
        wrapper = install_enabled(server, project, cpu_site_copy(json.loads(TRAIN.read_text())))
        wrapper = wrapper["train-project"]

        job = _launch(server, project, wrapper, "cut")
        deadline = time.monotonic() + 300
        while _stored_latest_epoch(xnat, project, "cut") < 2:  # a checkpoint is in ML_RUNS
            state = server.session().get(f"{server.url}/xapi/containers/{job}").json()
            assert state["status"] not in ("Complete", "Failed", "Killed"), (
                state, job_logs(server, job))  # fmt: skip
            assert time.monotonic() < deadline, "no checkpoint reached ML_RUNS in 5 minutes"
            time.sleep(0.2)
        killed = server.session().post(f"{server.url}/xapi/containers/{job}/kill")
        assert killed.status_code == 200, killed.text
        assert wait_job(server, job)["status"] == "Killed"

        status = run_status(xnat, project, "cut")
        assert status["state"] == "killed", status
        assert status["message"] == "killed by SIGTERM"
        stopped_at = status["latest_epoch"]
        assert 2 <= stopped_at < EPOCHS, status  # killed mid-run, after a checkpoint
        files = {p.removeprefix("cut/") for p in run_paths(xnat, project, "cut")}
        assert {"run.json", "config.json", "latest.pt", "model.pt", "metrics.csv"} <= files

        again = _launch(server, project, wrapper, "cut")
        ended = wait_job(server, again, timeout=540)
        assert ended["status"] == "Complete", (ended, job_logs(server, again))
        status = run_status(xnat, project, "cut")
        assert (status["state"], status["epoch"]) == ("completed", EPOCHS), status
        log = read_text(xnat, project, "ML_RUNS", "cut/train.log")
        assert f"resuming run cut at epoch {stopped_at}, iteration {2 * stopped_at}" in log

        whole = _launch(server, project, wrapper, "whole")
        assert wait_job(server, whole, timeout=540)["status"] == "Complete"
        resumed, reference = _metrics(xnat, project, "cut"), _metrics(xnat, project, "whole")
    assert [int(row["epoch"]) for row in resumed] == list(range(1, EPOCHS + 1))
    for ours, theirs in zip(resumed, reference, strict=True):  # same seed: the same numbers
        for column in ("train_loss", "val_mean_dice"):
            assert abs(float(ours[column]) - float(theirs[column])) < 1e-6, (column, ours, theirs)
