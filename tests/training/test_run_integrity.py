"""A run is promoted or resumed only as its job wrote it: a status.json claiming a better Dice,
other weights, or an edited config, written straight to the server's disk (past every access
rule), are refused with one line naming the file, and nothing is promoted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic import tiny_config as local_config
from synthetic import write_dataset
from template_paths import TISSUES
from xnat_project import TrainingProject, set_up

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import file_sha256
from xnat_ml.training.project_files import list_paths
from xnat_ml.training.project_runs import run_status
from xnat_ml.training.project_train import TrainRequest, promote_in_project, train_in_project
from xnat_ml.training.runner import execute_run, prepare_run
from xnat_ml.xnat import connect

PROJECT = "FORGED"


@pytest.fixture(scope="module")
def forged(xnat_server, tmp_path_factory) -> TrainingProject:
    """The project with one completed run, `honest`."""
    admin = xnat_server.session()
    admin.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    work = tmp_path_factory.mktemp("forged")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, work, cases=3)
        request = TrainRequest(PROJECT, "tiny", run_id="honest", work_dir=work / "work",
                               cache=work / "cache")  # fmt: skip
        assert train_in_project(session, request)["state"] == "completed"
    yield TrainingProject(PROJECT, xnat_server.url, xnat_server.user, xnat_server.password)
    admin.delete(f"{xnat_server.url}/data/projects/{PROJECT}")


def _on_disk(server, run_file: str) -> Path:
    """Where the server keeps ML_RUNS/<run_file> of the project."""
    [path] = [p for p in (server.data_dir / "archive" / PROJECT).rglob("*")
              if p.as_posix().endswith(f"/{run_file}")]  # fmt: skip
    return path


def _promote_refused(forged: TrainingProject, name: str) -> str:
    done = forged.cli("promote", "honest", "--project", PROJECT, "--name", name)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("xnat-ml: error: run honest: "), done.stderr
    return done.stderr.strip()


def test_forged_status_or_weights_are_not_promoted(xnat_server, forged):
    with connect(forged.url, forged.user, forged.password) as xnat:
        honest = run_status(xnat, PROJECT, "honest")
    status_file, weights = _on_disk(xnat_server, "honest/status.json"), _on_disk(
        xnat_server, "honest/model.pt")  # fmt: skip
    assert honest["checkpoints"]["model.pt"] == file_sha256(weights)
    original = status_file.read_bytes()
    status_file.write_text(json.dumps({**honest, "best_metric": 0.99}))
    line = _promote_refused(forged, "forged-dice")
    assert f"status.json says best_metric 0.99, its latest.pt says {honest['best_metric']}" in line
    # The status and latest.pt agree, but the weights are others.
    status_file.write_bytes(original)
    weights_bytes = weights.read_bytes()
    weights.write_bytes(weights_bytes[:-1] + bytes([weights_bytes[-1] ^ 1]))
    assert "model.pt: changed since the run recorded it" in _promote_refused(forged, "swapped")
    # A status without digests (written by hand) proves nothing.
    weights.write_bytes(weights_bytes)
    status_file.write_text(json.dumps({k: v for k, v in honest.items() if k != "checkpoints"}))
    assert "status.json records no digest of model.pt" in _promote_refused(forged, "bare")
    with connect(forged.url, forged.user, forged.password) as xnat:
        stored = {p.split("/")[0] for p in list_paths(xnat, PROJECT, "ML_MODELS")}
        assert not stored & {"forged-dice", "swapped", "bare"}, stored
        status_file.write_bytes(original)
        number, card = promote_in_project(xnat, PROJECT, "honest", "honest-model")
    assert card.metrics == {"val_mean_dice": honest["best_metric"]}


def test_edited_run_folder_is_not_resumed(tmp_path):
    """A run whose config.json or bundle was edited after preparation (a resumed job would run
    it) is refused before any of it is parsed."""
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    run = prepare_run(tmp_path / "edited", local_config(epochs=1), TISSUES, data)
    original = run.file("config.json").read_bytes()
    config = json.loads(original)
    config["overrides"] = {"optimizer#lr": "$__import__('os').system('touch /tmp/pwned') or 1"}
    run.file("config.json").write_text(json.dumps(config))
    with pytest.raises(XnatMlError, match=r"^run edited: config.json: changed since the run "
                                          r"recorded it \(digest differs\)$"):  # fmt: skip
        execute_run(run.path)
    run.file("config.json").write_bytes(original)
    (run.file("bundle") / "configs" / "extra.json").write_text("{}")
    with pytest.raises(XnatMlError, match="bundle/configs/extra.json: not in the bundle the run"):
        execute_run(run.path)
    assert run.status()["state"] == "prepared"
