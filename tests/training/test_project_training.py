"""Training in a project on the embedded server: models in ML_MODELS, configs in ML_CONFIGS, runs
mirrored to ML_RUNS, train through the Container Service, promote and fine-tune, refusals that
leave nothing behind, resume through XNAT, and the `xnat-ml model|config|runs` verbs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests
import torch
from shared_data import SHARED_DATA, require
from template_paths import REPO, TISSUES
from xnat_project import TrainingProject, archive_file, set_up, tiny_config

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import bundle_digests
from xnat_ml.training.project_configs import list_configs, push_config
from xnat_ml.training.project_files import list_paths, read_text
from xnat_ml.training.project_models import (
    install_model,
    list_models,
    read_model_card,
)
from xnat_ml.training.project_runs import list_runs, run_paths, run_status
from xnat_ml.training.project_train import (
    TrainRequest,
    local_run_folder,
    promote_in_project,
    train_in_project,
)
from xnat_ml.xnat import connect

PROJECT = "TRAINX"
RUN_FILES = {"run.json", "config.json", "status.json", "metrics.csv", "model.pt", "latest.pt",
             "curves.png", "train.log", "bundle/configs/train.json"}  # fmt: skip


@pytest.fixture(scope="module")
def trainx(xnat_server, tmp_path_factory) -> TrainingProject:
    admin = xnat_server.session()
    admin.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, tmp_path_factory.mktemp("trainx"))
    yield TrainingProject(PROJECT, xnat_server.url, xnat_server.user, xnat_server.password)
    admin.delete(f"{xnat_server.url}/data/projects/{PROJECT}")


@pytest.fixture
def xnat(xnat_server):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


def request(tmp_path: Path, **kwargs) -> TrainRequest:
    return TrainRequest(project=PROJECT, work_dir=tmp_path / "work", cache=tmp_path / "cache",
                        **{"config": "tiny", **kwargs})  # fmt: skip


def stored_files(xnat, run_id: str) -> set[str]:
    return {p.removeprefix(f"{run_id}/") for p in run_paths(xnat, PROJECT, run_id)}


# ---- models and configs -----------------------------------------------------------------------


def test_spleen_bundle_installs_unchanged_and_verbs_show_it(trainx, xnat, tmp_path):
    spleen = require(SHARED_DATA / "bundles" / "spleen_ct_segmentation")
    done = trainx.cli("model", "install", str(spleen), "--project", PROJECT, "--name", "spleen")
    assert done.returncode == 0, done.stderr
    assert "ML_MODELS/spleen/v1: installed (1 spleen)" in done.stdout
    listed = trainx.cli("model", "list", "--project", PROJECT)
    assert "spleen: v1" in listed.stdout and "tissues: v1" in listed.stdout
    pulled = tmp_path / "spleen"
    assert trainx.cli("model", "pull", "spleen", "--project", PROJECT, "--to", str(pulled)) \
        .returncode == 0  # fmt: skip
    source, copy = bundle_digests(spleen), bundle_digests(pulled)
    assert {k: copy[k] for k in source} == source  # every file of the bundle, byte for byte
    assert set(copy) - set(source) == {"model.json", "region2MaskValueMap.txt"}
    card = json.loads(trainx.cli("model", "show", "spleen", "--project", PROJECT).stdout)
    assert (card["name"], card["version"], card["labels"]) == \
        ("spleen", "1", {"0": "background", "1": "spleen"})  # fmt: skip
    assert card["input_channels"] == ["image"]


def _zip(folder: Path, target: Path, extra: dict[str, bytes] = {}) -> Path:  # noqa: B006
    with zipfile.ZipFile(target, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"tissues/{path.relative_to(folder).as_posix()}")
        for name, data in extra.items():
            zf.writestr(name, data)
    return target


def test_model_install_refusals_upload_nothing(trainx, xnat, tmp_path):
    before = list_paths(xnat, PROJECT, "ML_MODELS")
    broken = Path(shutil.copytree(TISSUES, tmp_path / "broken"))
    (broken / "configs" / "train.json").write_text('{"network_def": ')
    lacking = Path(shutil.copytree(TISSUES, tmp_path / "lacking"))
    train = json.loads((lacking / "configs" / "train.json").read_text())
    del train["validate"]
    (lacking / "configs" / "train.json").write_text(json.dumps(train))
    linked = Path(shutil.copytree(TISSUES, tmp_path / "linked"))
    (linked / "configs" / "extra.json").symlink_to(tmp_path / "secret.json")
    cases = {
        linked: f"bundle {linked}: configs/extra.json is a symbolic link",
        broken: "configs/train.json is not valid JSON (line 1",
        lacking: "configs/train.json lacks the required id 'validate#evaluator'",
        _zip(TISSUES, tmp_path / "good.zip", {"../evil.txt": b"x"}): "points outside",
        _zip(broken, tmp_path / "broken.zip"): "is not valid JSON",
    }
    for source, message in cases.items():
        done = trainx.cli("model", "install", str(source), "--project", PROJECT, "--name", "bad")
        assert done.returncode == 1, done.stdout
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert list_paths(xnat, PROJECT, "ML_MODELS") == before
    # a good zip (its single top folder is the bundle) installs
    number, card = install_model(xnat, PROJECT, _zip(TISSUES, tmp_path / "ok.zip"), "zipped")
    assert (number, card.labels[2]) == (1, "White Matter")


def test_config_verbs(trainx, xnat, tmp_path):
    template = REPO / "training_configs" / "sample-tissues-cpu.json"
    offline = subprocess.run([sys.executable, "-m", "xnat_ml", "config", "validate",
                              str(template)], capture_output=True, text=True)  # fmt: skip
    assert offline.returncode == 0 and "valid" in offline.stdout, offline.stderr
    listed = subprocess.run([sys.executable, "-m", "xnat_ml", "config", "templates"],
                            capture_output=True, text=True).stdout  # fmt: skip
    assert f"sample-tissues-cpu: config {template}, model {TISSUES}" in listed
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**tiny_config(), "trainig": {}}))
    refused = trainx.cli("config", "push", str(bad), "--project", PROJECT)
    assert refused.returncode == 1 and "trainig" in refused.stderr
    # the template names model sample-tissues-cpu and dataset tissues; this project installed
    # the bundle as `tissues` and built `blobs`: refused in one line naming what it has
    refused = trainx.cli("config", "push", str(template), "--project", PROJECT, "--name", "cpu")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"xnat-ml: error: config {template}: model sample-tissues-cpu is not in project " \
        f"{PROJECT} (its models: " in refused.stderr and "tissues v1" in refused.stderr
    template_value = json.loads(template.read_text())
    fixed = tmp_path / "cpu.json"
    for model, dataset, message in (
        ("tissues:9", "blobs", "model tissues:9 is not in project"),
        ("tissues", "tissues", "dataset tissues is not in project TRAINX (its datasets: blobs v1"),
        ("tissues", "blobs:5", "dataset blobs:5 is not in project"),
    ):
        (name, _, version), (dname, _, dversion) = model.partition(":"), dataset.partition(":")
        fixed.write_text(json.dumps({**template_value, "model": {"name": name, "version": version},
                                     "dataset": {"name": dname, "version": dversion}}))
        refused = trainx.cli("config", "push", str(fixed), "--project", PROJECT)
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
    assert "cpu" not in list_configs(xnat, PROJECT)
    fixed.write_text(json.dumps({**template_value, "model": {"name": "tissues", "version": "1"},
                                 "dataset": {"name": "blobs", "version": ""}}))
    assert trainx.cli("config", "push", str(fixed), "--project", PROJECT).returncode == 0
    listed = trainx.cli("config", "list", "--project", PROJECT).stdout.split()
    assert {"cpu", "tiny"} <= set(listed) and "bad" not in listed


# ---- training -------------------------------------------------------------------------------


def _enable(server, command: Path) -> int:
    http, url = server.session(), server.url
    data = json.loads(command.read_text())
    installed = [c for c in http.get(f"{url}/xapi/commands").json() if c["name"] == data["name"]]
    if not installed:
        http.post(f"{url}/xapi/commands", json=data).raise_for_status()
        installed = [c for c in http.get(f"{url}/xapi/commands").json()
                     if c["name"] == data["name"]]  # fmt: skip
    wrapper = int(installed[0]["xnat"][0]["id"])
    http.put(f"{url}/xapi/wrappers/{wrapper}/enabled").raise_for_status()
    http.put(f"{url}/xapi/projects/{PROJECT}/wrappers/{wrapper}/enabled").raise_for_status()
    return wrapper


def _wait_job(server, job_id: int, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = server.session().get(f"{server.url}/xapi/containers/{job_id}").json()
        if job["status"] in ("Complete", "Failed", "Failed (Upload)", "Killed"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_train_through_the_container_service(xnat_server, trainx, xnat):
    wrapper = _enable(xnat_server, REPO / "command_json" / "train.json")
    launched = xnat_server.session().post(
        f"{xnat_server.url}/xapi/projects/{PROJECT}/wrappers/{wrapper}/root/project/launch",
        json={"project": f"/data/projects/{PROJECT}", "CONFIG": "tiny", "RUN_ID": "cs-run"},
    )
    assert launched.status_code == 200, launched.text
    job_id = int(launched.json()["id"])
    job = _wait_job(xnat_server, job_id)
    logs = xnat_server.session().get(f"{xnat_server.url}/xapi/containers/{job_id}/logs/stderr")
    assert job["status"] == "Complete", logs.text[-3000:]
    files = stored_files(xnat, "cs-run")
    assert RUN_FILES <= files, files
    assert any(f.startswith("tensorboard/events.out.tfevents") for f in files), files
    status = run_status(xnat, PROJECT, "cs-run")
    assert (status["state"], status["epoch"]) == ("completed", 2)
    metrics = read_text(xnat, PROJECT, "ML_RUNS", "cs-run/metrics.csv").splitlines()
    assert metrics[0].startswith("epoch,") and len(metrics) == 3
    record = json.loads(read_text(xnat, PROJECT, "ML_RUNS", "cs-run/run.json"))
    assert record["model"]["version"] == "1" and record["dataset"]["version"] == "1"


def test_promote_then_finetune_from_the_promoted_model(trainx, xnat, tmp_path):
    # a dead local run of the same project and run id on another XNAT is not this server's run
    other = "http://other.example:8080/xnat"
    elsewhere = local_run_folder(tmp_path / "work", other, PROJECT, "base")
    elsewhere.mkdir(parents=True)
    (elsewhere / "run.json").write_text('{"model": {"name": "someone-elses", "version": "9"}}')
    status = train_in_project(xnat, request(tmp_path, run_id="base"))
    assert status["state"] == "completed"
    here = local_run_folder(tmp_path / "work", xnat.server, PROJECT, "base")
    assert here != elsewhere and json.loads((here / "run.json").read_text())["model"]["version"]
    assert RUN_FILES <= stored_files(xnat, "base")
    number, card = promote_in_project(xnat, PROJECT, "base", "tissues-ft")
    assert number == 1
    tuned = train_in_project(xnat, request(tmp_path, run_id="tuned", from_model="tissues-ft:1"))
    assert tuned["state"] == "completed"
    record = json.loads(read_text(xnat, PROJECT, "ML_RUNS", "tuned/run.json"))
    assert record["finetune"] is True and record["model"] == {
        **record["model"], "name": "tissues-ft", "version": "1"}  # fmt: skip
    assert promote_in_project(xnat, PROJECT, "tuned", "tissues-ft")[0] == 2
    shown = trainx.cli("model", "show", "tissues-ft", "--project", PROJECT)
    card = json.loads(shown.stdout)
    assert card["parent"] == {"name": "tissues-ft", "version": "1"}
    assert (card["run"], card["dataset"]) == ("tuned", {"name": "blobs", "version": "1"})
    assert set(card["metrics"]) == {"val_mean_dice"}
    first = json.loads(trainx.cli("model", "show", "tissues-ft", "--project", PROJECT,
                                  "--version", "1").stdout)  # fmt: skip
    assert (first["parent"], first["run"]) == ({"name": "tissues", "version": "1"}, "base")
    assert first["overrides"] == {"network_def#channels": [4, 8, 16, 32]}
    # an unfinished or unknown run is no model
    with pytest.raises(XnatMlError, match="run nope: not in project"):
        promote_in_project(xnat, PROJECT, "nope", "x")


def _broken_model(xnat, tmp_path: Path, name: str, **card_changes) -> None:
    folder = Path(shutil.copytree(TISSUES, tmp_path / name))
    card = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**card, **card_changes}))
    install_model(xnat, PROJECT, folder, name)


def _push(xnat, tmp_path: Path, name: str, config: dict) -> None:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    push_config(xnat, PROJECT, path)


def test_refusals_leave_nothing_in_runs_or_models(xnat_server, trainx, xnat, tmp_path):
    _broken_model(xnat, tmp_path, "twochannel", input_channels=["T1w", "T2w"])
    (tmp_path / "map.txt").write_text("Tumour=1\nWhite Matter=2\n")
    install_model(xnat, PROJECT, TISSUES, "tumour", tmp_path / "map.txt")
    install_model(xnat, PROJECT, TISSUES, "brokencfg")
    archive_file(xnat_server.data_dir, PROJECT, "ML_MODELS", "brokencfg/v1/configs/train.json") \
        .write_bytes(b'{"oops": ')  # fmt: skip
    model = lambda name, version="": {"model": {"name": name, "version": version}}  # noqa: E731
    dataset = {"dataset": {"name": "blobs", "version": "7"}}
    configs = {
        "nomodelv": (tiny_config(**model("tissues", "9")), "model tissues: no version v9"),
        "nomodel": (tiny_config(**model("ghost")), "model ghost: not in project"),
        "nodata": (tiny_config(**dataset), "dataset blobs: no version v7"),
        "labels": (tiny_config(**model("tumour")),
                   "dataset blobs v1: label 1 'Grey Matter' is not in model tumour v1's label map"),
        "channels": (tiny_config(**model("twochannel")),
                     "dataset blobs v1: 1 image channel(s) per case, model twochannel v1 takes 2"),
        "brokencfg": (tiny_config(**model("brokencfg")),
                      "model brokencfg v1: configs/train.json differs from its digest"),
        "noparent": (tiny_config(overrides={"nowhere#lr": 0.1}), "overrides.nowhere#lr: model "
                     "tissues v1's configs/train.json has no id 'nowhere'"),
    }  # fmt: skip
    if torch.cuda.device_count() < 2:  # checked before the dataset is fetched
        gpus = tiny_config(resources={"gpus": 2})
        gpus["training"]["device"] = "cuda"
        configs["gpus"] = (gpus, "run refused-gpus: asks for 2 GPUs and this machine sees")
    for name, (config, _) in configs.items():
        _push(xnat, tmp_path, name, config)
    models_before = list_paths(xnat, PROJECT, "ML_MODELS")
    runs_before = list_paths(xnat, PROJECT, "ML_RUNS")
    for name, (_, message) in configs.items():
        with pytest.raises(XnatMlError) as refused:
            train_in_project(xnat, request(tmp_path, config=name, run_id=f"refused-{name}"))
        assert message in str(refused.value) and "\n" not in str(refused.value)
        assert not list((tmp_path / "work" / "runs").rglob(f"refused-{name}"))
    with pytest.raises(XnatMlError, match="config absent: not in project"):
        train_in_project(xnat, request(tmp_path, config="absent"))
    with pytest.raises(XnatMlError, match="has no weights"):  # nothing to fine-tune from
        train_in_project(xnat, request(tmp_path, run_id="noweights", from_model="tissues"))
    done = trainx.cli("train", "--project", PROJECT, "--config", "nodata", "--run-id", "clirun",
                      "--work-dir", str(tmp_path / "w"), "--cache", str(tmp_path / "c"))
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "no version v7" in done.stderr
    # --model stands in for the config's model: `nomodel` names a model the project lacks
    for model, message in (("tissues:9", "model tissues: no version v9"),
                           ("tissues", "dataset blobs: no version v7")):  # fmt: skip
        done = trainx.cli("train", "--project", PROJECT, "--config", "nomodel", "--model", model,
                          "--dataset", "blobs:7", "--work-dir", str(tmp_path / "w"))
        assert done.returncode == 1 and message in done.stderr, done.stderr
    done = trainx.cli("finetune", "--project", PROJECT, "--config", "tiny", "--model", "tissues",
                      "--work-dir", str(tmp_path / "w"))  # finetune's --from, also --model
    assert done.returncode == 1 and "has no weights" in done.stderr, done.stderr
    assert list_paths(xnat, PROJECT, "ML_MODELS") == models_before
    assert list_paths(xnat, PROJECT, "ML_RUNS") == runs_before


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_killed_run_resumes_through_xnat_and_runs_verbs(trainx, xnat, tmp_path):
    _push(xnat, tmp_path, "long", tiny_config(epochs=8))
    work = tmp_path / "first"
    process = subprocess.Popen(
        [sys.executable, "-m", "xnat_ml", "train", "--project", PROJECT, "--config", "long",
         "--run-id", "phoenix", "--work-dir", str(work), "--cache", str(tmp_path / "cache"),
         "--url", trainx.url, "--user", trainx.user, "--password", trainx.password],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while ((run_status(xnat, PROJECT, "phoenix") or {}).get("latest_epoch") or 0) < 2:
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint of epoch 2 in ML_RUNS"
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    died = run_status(xnat, PROJECT, "phoenix")
    assert died["state"] == "running" and died["latest_epoch"] < 8
    shutil.rmtree(work)  # the local folder is gone: the relaunch pulls the run from ML_RUNS
    status = train_in_project(xnat, request(tmp_path, config="long", run_id="phoenix"))
    assert (status["state"], status["epoch"]) == ("completed", 8)
    log = read_text(xnat, PROJECT, "ML_RUNS", "phoenix/train.log")
    assert "resuming run phoenix at epoch" in log
    epochs = [row.split(",")[0] for row in
              read_text(xnat, PROJECT, "ML_RUNS", "phoenix/metrics.csv").splitlines()[1:]]
    assert epochs == [str(e) for e in range(1, 9)]
    with pytest.raises(XnatMlError, match="already completed"):
        train_in_project(xnat, request(tmp_path, config="long", run_id="phoenix"))

    assert "phoenix" in list_runs(xnat, PROJECT)
    listed = trainx.cli("runs", "list", "--project", PROJECT)
    assert "run phoenix: completed, epoch 8/8" in listed.stdout, listed.stderr
    shown = json.loads(trainx.cli("runs", "show", "phoenix", "--project", PROJECT).stdout)
    assert shown["record"]["dataset"]["version"] == "1"
    followed = trainx.cli("runs", "follow", "phoenix", "--project", PROJECT, "--interval", "0.1")
    assert followed.returncode == 0 and "completed" in followed.stdout
    board = tmp_path / "board"
    dry = trainx.cli("runs", "tensorboard", "phoenix", "--project", PROJECT, "--to", str(board),
                     "--dry-run")  # fmt: skip
    assert dry.returncode == 0 and "tensorboard.main --logdir" in dry.stdout, dry.stderr
    assert list((board / "tensorboard").glob("events.out.tfevents*"))
    port = _free_port()
    served = subprocess.Popen(
        [sys.executable, "-m", "xnat_ml", "runs", "tensorboard", "phoenix", "--project", PROJECT,
         "--to", str(board), "--port", str(port), "--url", trainx.url, "--user", trainx.user,
         "--password", trainx.password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert served.poll() is None and time.monotonic() < deadline, "no TensorBoard"
            time.sleep(0.5)
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        served.wait(timeout=30)


def test_models_listing_ignores_loose_files(trainx, xnat):
    """ML_MODELS also holds the project's label map at its top: it is no model."""
    models = list_models(xnat, PROJECT)
    assert "tissues" in models and "region2MaskValueMap.txt" not in models
    assert read_model_card(xnat, PROJECT, "tissues", 1).version == "1"
