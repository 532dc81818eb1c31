"""A server without room for a run: its first upload is a 507, the run is refused before any
training with one line, and nothing is left in ML_RUNS; a server that fills up mid-run never
stores `completed` over weights it lacks, and the relaunch after room is made completes (the
server's data folder sits on a small tmpfs filled to the brim)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers import XnatServer
from small_disk import fill, small_tmpfs
from synthetic import tiny_config as local_config
from synthetic import write_dataset
from template_paths import TISSUES
from xnat_project import set_up, tiny_config

from xnat_ml.errors import XnatMlError
from xnat_ml.training import project_train
from xnat_ml.training.bundle import file_sha256
from xnat_ml.training.project_configs import push_config
from xnat_ml.training.project_files import list_paths
from xnat_ml.training.project_runs import RunUploader, pull_run
from xnat_ml.training.project_train import TrainRequest, promote_in_project, train_in_project
from xnat_ml.training.run_folder import STATUS_FILE
from xnat_ml.training.runner import prepare_run
from xnat_ml.xnat import connect

PROJECT = "FULLRUN"


@pytest.fixture
def mount(tmp_path):
    (tmp_path / "small-fs").mkdir()
    with small_tmpfs(tmp_path / "small-fs") as where:
        yield where


def test_no_room_for_the_run_refuses_it_and_writes_nothing(mount, tmp_path):
    server = XnatServer(mount / "data")
    server.start()
    try:
        server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
        with connect(server.url, server.user, server.password) as session:
            set_up(session, PROJECT, tmp_path, cases=3)
            filler = fill(mount)  # every free byte taken
            request = TrainRequest(PROJECT, "tiny", run_id="nospace", work_dir=tmp_path / "work",
                                   cache=tmp_path / "cache")  # fmt: skip
            with pytest.raises(XnatMlError) as refused:
                train_in_project(session, request)
            message = str(refused.value)
            assert "run nospace: cannot be stored in project FULLRUN's ML_RUNS" in message
            assert "no space left on the XNAT server (507)" in message and "\n" not in message
            assert not list((tmp_path / "work" / "runs").rglob("nospace"))
            filler.unlink()
            assert list_paths(session, PROJECT, "ML_RUNS") == []
    finally:
        server.stop()


class FillingUploader(RunUploader):
    """The run's uploader, filling the server's disk (once) before the first upload whose
    status has a checkpoint of epoch ``fill_at`` (the test sets ``mount`` and ``fill_at``)."""

    mount: Path
    fill_at: int
    filled = False

    def __call__(self, run, changed):
        if (STATUS_FILE in changed and not FillingUploader.filled
                and (run.status().get("latest_epoch") or 0) >= self.fill_at):  # fmt: skip
            fill(self.mount)
            FillingUploader.filled = True
        super().__call__(run, changed)


def _stored_run(session, run_id: str, dest: Path) -> tuple[dict, dict[str, str]]:
    """The run's status in ML_RUNS and the sha256 of the checkpoints stored beside it."""
    shutil.rmtree(dest, ignore_errors=True)
    pull_run(session, PROJECT, run_id, dest, only=("status.json", "model.pt", "latest.pt"))
    status = json.loads((dest / "status.json").read_text())
    return status, {p.name: file_sha256(p) for p in dest.glob("*.pt")}


@pytest.mark.parametrize("fill_at", [3, 1], ids=["late-checkpoint", "whole-run"])
def test_full_disk_never_stored_as_completed_and_relaunch_completes(
    mount, tmp_path, monkeypatch, caplog, fill_at
):
    """Full from the checkpoint of epoch 3 of 4, or from the first one: the run ends failed
    with one line naming the file; ML_RUNS keeps the last status whose checkpoints it holds
    (never `completed`); made room, the relaunch (from the local folder, or from ML_RUNS alone
    when that is gone) completes with digests that match what is stored."""
    server = XnatServer(mount / "data")
    server.start()
    monkeypatch.setattr(FillingUploader, "mount", mount, raising=False)
    monkeypatch.setattr(FillingUploader, "fill_at", fill_at, raising=False)
    monkeypatch.setattr(FillingUploader, "filled", False)
    monkeypatch.setattr(project_train, "RunUploader", FillingUploader)
    try:
        server.session().put(f"{server.url}/data/projects/{PROJECT}").raise_for_status()
        with connect(server.url, server.user, server.password) as session:
            set_up(session, PROJECT, tmp_path, cases=3)
            config = tmp_path / "four.json"
            config.write_text(json.dumps(tiny_config(epochs=4)))
            push_config(session, PROJECT, config)
            request = TrainRequest(PROJECT, "four", run_id="full", work_dir=tmp_path / "work",
                                   cache=tmp_path / "cache")  # fmt: skip
            with caplog.at_level(logging.INFO), pytest.raises(XnatMlError) as failed:
                train_in_project(session, request)
            assert str(failed.value) == (
                "run full: failed: ML_RUNS/full/latest.pt: no space left on the XNAT server (507)"
            )
            assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
            status, digests = _stored_run(session, "full", tmp_path / "stored")
            assert status["state"] != "completed", status
            if fill_at == 1:
                assert status["state"] == "prepared" and digests == {}, (status, digests)
            else:
                assert status["latest_epoch"] == fill_at - 1, status
                assert {k: status["checkpoints"][k] for k in digests} == digests
            for filler in mount.glob("filler-*"):
                filler.unlink()
            if fill_at == 1:  # the local folder is lost too: everything comes from ML_RUNS
                shutil.rmtree(tmp_path / "work" / "runs")
            status = train_in_project(session, request)
            assert (status["state"], status["epoch"]) == ("completed", 4), status
            stored, digests = _stored_run(session, "full", tmp_path / "stored")
            assert stored["state"] == "completed"
            assert stored["checkpoints"] == digests and set(digests) == {"model.pt", "latest.pt"}
            number, card = promote_in_project(session, PROJECT, "full", "from-full")
            assert card.metrics == {"val_mean_dice": stored["best_metric"]}
    finally:
        server.stop()


def test_full_local_disk_is_one_line_naming_the_file(mount, tmp_path):
    """The run folder's own disk full: `python -m xnat_ml.training.runner` ends with one line
    naming the file it could not write (the run folder when the writer did not say), and no
    traceback."""
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    run = prepare_run(mount / "runs" / "local", local_config(epochs=2), TISSUES, data)
    fill(mount)
    done = subprocess.run([sys.executable, "-m", "xnat_ml.training.runner", str(run.path)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    line = f"xnat-ml: error: run local: failed: {run.path}(/[^ ]+)?: no space left on device"
    assert re.fullmatch(line, done.stderr.splitlines()[-1]), done.stderr[-3000:]
