"""Live progress of a run: status.json reaches ML_RUNS between validations (throttled, from a
thread of its own), `runs follow` draws it as a bar with the run's ETA and exits non-zero on a
failed run, and the run's pictures (curves.png, validation.png) reach ML_RUNS."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image
from xnat_project import TrainingProject, set_up, tiny_config

from xnat_ml.training import project_runs, recorder
from xnat_ml.training.project_configs import push_config
from xnat_ml.training.project_files import upload_tree
from xnat_ml.training.project_runs import RunUploader, run_status
from xnat_ml.training.project_train import TrainRequest, train_in_project
from xnat_ml.training.run_folder import RunFolder
from xnat_ml.xnat import connect

PROJECT = "PROGLIVE"
EPOCHS = 20  # 2 iterations each; one validation, at the end


@pytest.fixture(scope="module")
def proglive(xnat_server, tmp_path_factory) -> TrainingProject:
    admin = xnat_server.session()
    admin.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    work = tmp_path_factory.mktemp("proglive")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, work)
        config = tiny_config(EPOCHS)
        config["training"]["val_interval"] = EPOCHS
        (work / "live.json").write_text(json.dumps(config))
        push_config(session, PROJECT, work / "live.json")
    yield TrainingProject(PROJECT, xnat_server.url, xnat_server.user, xnat_server.password)
    admin.delete(f"{xnat_server.url}/data/projects/{PROJECT}")


@pytest.fixture
def xnat(xnat_server):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


def _follow(project: TrainingProject, run_id: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "xnat_ml", "runs", "follow", run_id, "--project", project.id,
         "--interval", "0.2", "--url", project.url, "--user", project.user,
         "--password", project.password],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_status_moves_in_xnat_between_validations_and_follow_draws_it(
    proglive, xnat, xnat_server, tmp_path, monkeypatch
):
    monkeypatch.setattr(recorder, "STATUS_EVERY_S", 0.3)
    monkeypatch.setattr(project_runs, "LIVE_EVERY_S", 0.5)
    request = TrainRequest(project=PROJECT, config="live", run_id="live1",
                           work_dir=tmp_path / "work", cache=tmp_path / "cache")  # fmt: skip
    ended: dict = {}

    def train() -> None:
        with connect(xnat_server.url, xnat_server.user, xnat_server.password) as own:
            try:
                ended["status"] = train_in_project(own, request)
            except Exception as exc:  # noqa: BLE001 - the assertion below shows it
                ended["error"] = exc

    trainer = threading.Thread(target=train)
    trainer.start()
    seen: list[dict] = []
    follower = None
    while trainer.is_alive():
        status = run_status(xnat, PROJECT, "live1")
        if status is not None:
            follower = follower or _follow(proglive, "live1")
            if not seen or status["updated"] != seen[-1]["updated"]:
                seen.append(status)
        time.sleep(0.2)
    trainer.join()
    assert "error" not in ended, ended.get("error")
    assert ended["status"]["state"] == "completed"
    assert follower is not None
    out, err = follower.communicate(timeout=120)

    before_validation = [s for s in seen if s["state"] == "running" and s["best_metric"] is None
                         and s.get("iteration")]  # fmt: skip
    iterations = [s["iteration"] for s in before_validation]
    assert len(set(iterations)) >= 2, iterations  # it moved in XNAT before the first validation
    assert all(s["max_iterations"] == 2 * EPOCHS for s in before_validation)
    etas = [s["eta_s"] for s in before_validation]
    assert all(isinstance(eta, int | float) for eta in etas), etas
    assert etas[-1] < max(etas[: max(1, len(etas) // 2)]), etas  # decreasing, give or take
    assert not any(s["checkpoints"] for s in before_validation)  # none named before they exist

    assert follower.returncode == 0, err
    assert out.strip().startswith(f"run live1: completed, epoch {EPOCHS}/{EPOCHS}"), out
    frames = [frame for frame in re.split("[\r\n]", err) if "ETA" in frame]  # text=True: \n
    assert len({frame for frame in frames if "ETA 0:00" not in frame}) >= 2, err
    assert f"{2 * EPOCHS}/{2 * EPOCHS} it" in frames[-1] and "val_mean_dice" in frames[-1]

    for picture, size in (("curves.png", (900, 350)), ("validation.png", (500, 350))):
        png = xnat.get(f"/data/projects/{PROJECT}/resources/ML_RUNS/files/live1/{picture}")
        assert Image.open(io.BytesIO(png.content)).size == size, picture


def test_follow_ends_non_zero_on_a_failed_run_and_names_a_missing_one(proglive, xnat, tmp_path):
    failed = tmp_path / "status.json"
    failed.write_text(json.dumps({"run": "broken1", "state": "failed", "epoch": 1,
                                  "max_epochs": 4, "iteration": 2, "max_iterations": 8,
                                  "message": "out of memory"}))  # fmt: skip
    upload_tree(xnat, PROJECT, "ML_RUNS", {"broken1/status.json": failed}, content="ML_RUN")
    followed = _follow(proglive, "broken1")
    out, err = followed.communicate(timeout=120)
    assert followed.returncode == 1
    assert out == "run broken1: failed, epoch 1/4, out of memory\n"
    assert "2/8 it" in err

    missing = _follow(proglive, "nosuchrun")
    out, err = missing.communicate(timeout=120)
    assert missing.returncode != 0 and out == ""
    assert err.strip().splitlines()[-1] == (
        f"xnat-ml: error: run nosuchrun: not in project {PROJECT}'s ML_RUNS")


def test_live_status_never_names_checkpoints_the_server_lacks(proglive, xnat, tmp_path):
    """A status speaking of a checkpoint not yet synced, or a final state, stays local: only a
    sync (checkpoints first, status last) may store those."""
    run = RunFolder(tmp_path / "guard1")
    run.path.mkdir()
    uploader = RunUploader(xnat, PROJECT)
    run.write_status(state="running", epoch=1, iteration=2, checkpoints={})
    assert uploader.push_status(run)
    assert run_status(xnat, PROJECT, "guard1")["iteration"] == 2
    run.write_status(state="running", epoch=2, iteration=4, checkpoints={"model.pt": "ab" * 32})
    assert not uploader.push_status(run)
    run.write_status(state="completed", epoch=2, iteration=4, checkpoints={})
    assert not uploader.push_status(run)
    assert run_status(xnat, PROJECT, "guard1")["iteration"] == 2
