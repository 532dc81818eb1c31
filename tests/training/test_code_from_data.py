"""Finding 1 of issue 15 replayed by a Member on the local backend: a training config whose
override is a MONAI expression, and a model version whose configs/train.json was changed after
it was installed, must never run. The payload would create a marker file; it never appears.

(a) `config push` refuses the value; (b) a config stored around the CLI (a raw REST PUT) is
refused by the training job the Member launches through the Container Service, before the bundle
is parsed; (c) a version changed on the server's disk (the REST API will not overwrite a version)
is refused by that job on its digests. Neither leaves a run in ML_RUNS. A version stored without
digests.json (an older xnat-ml's) is refused as unverifiable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from template_paths import REPO, TISSUES
from xnat_project import archive_file, set_up, tiny_config

from xnat_ml.errors import XnatMlError
from xnat_ml.training.project_configs import list_configs, push_config
from xnat_ml.training.project_files import list_paths, read_text, upload_tree
from xnat_ml.training.project_models import install_model, list_models, pull_model
from xnat_ml.training.project_train import TrainRequest, promote_in_project, train_in_project
from xnat_ml.xnat import connect

PROJECT = "CODEDATA"
MEMBER, MEMBER_PASSWORD = "mallory", "mallory-pw-1"
FINAL = ("Complete", "Failed", "Failed (Upload)", "Killed")


def payload(marker: Path) -> str:
    """The Member's value from the finding: code that creates ``marker``, then a learning rate."""
    return f"$exec(\"open({str(marker)!r}, 'w').close()\") or 0.002"


@pytest.fixture(scope="module")
def site(xnat_server, tmp_path_factory):
    """The project set up for training (admin is Owner), a Member, the train command enabled."""
    admin, url = xnat_server.session(), xnat_server.url
    admin.put(f"{url}/data/projects/{PROJECT}").raise_for_status()
    with connect(url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, tmp_path_factory.mktemp("codedata"))
    xnat_server.add_user(MEMBER, MEMBER_PASSWORD, PROJECT, "Member")
    command = json.loads((REPO / "command_json" / "train.json").read_text())
    answer = admin.post(f"{url}/xapi/commands", json=command)
    assert answer.status_code in (201, 409), answer.text
    [listed] = admin.get(
        f"{url}/xapi/commands", params={"name": command["name"], "version": command["version"]}
    ).json()
    wrapper = int(listed["xnat"][0]["id"])
    for scope in ("", f"/projects/{PROJECT}"):
        admin.put(f"{url}/xapi{scope}/wrappers/{wrapper}/enabled").raise_for_status()
    xnat_server.train_wrapper = wrapper
    yield xnat_server
    admin.delete(f"{url}/data/projects/{PROJECT}")


@pytest.fixture
def xnat(site):
    with connect(site.url, site.user, site.password) as opened:
        yield opened


def _launch_as_member(server, config: str, run_id: str) -> tuple[dict, str]:
    """Launch `train` as the Member through the launch API; the finished job and its logs."""
    member = server.session(MEMBER, MEMBER_PASSWORD)
    launched = member.post(
        f"{server.url}/xapi/projects/{PROJECT}/wrappers/{server.train_wrapper}/root/project/launch",
        json={"project": f"/data/projects/{PROJECT}", "CONFIG": config, "RUN_ID": run_id},
    )
    assert launched.status_code == 200, launched.text
    job_id = int(launched.json()["id"])
    deadline = time.monotonic() + 300
    while (job := server.session().get(f"{server.url}/xapi/containers/{job_id}").json())[
        "status"
    ] not in FINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    logs = server.session().get(f"{server.url}/xapi/containers/{job_id}/logs/stderr").text
    return job, logs


def _run_files(xnat, run_id: str) -> list[str]:
    return [p for p in list_paths(xnat, PROJECT, "ML_RUNS") if p.startswith(f"{run_id}/")]


def test_a_config_push_of_an_expression_is_refused(site, xnat, tmp_path):
    marker = tmp_path / "MARK-a"
    config = tiny_config()
    config["overrides"] = {**config["overrides"], "optimizer#lr": payload(marker)}
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "xnat_ml", "config", "push", str(path), "--project", PROJECT,
         "--url", site.url, "--user", MEMBER, "--password", MEMBER_PASSWORD],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    error = done.stderr.strip()
    assert error.startswith(f"xnat-ml: error: {path}: overrides.optimizer#lr: "), error
    assert "starts with '$'" in error and "\n" not in error
    assert "evil" not in list_configs(xnat, PROJECT) and not marker.exists()


def test_b_a_config_stored_around_the_cli_is_refused_in_the_job(site, xnat, tmp_path):
    marker = tmp_path / "MARK-b"
    config = tiny_config()
    config["overrides"] = {**config["overrides"], "optimizer#lr": payload(marker)}
    stored = site.session().put(  # a raw REST PUT: no CLI checked it
        f"{site.url}/data/projects/{PROJECT}/resources/ML_CONFIGS/files/evil.json",
        data=json.dumps(config).encode(), params={"overwrite": "true"},
        headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    assert stored.status_code in (200, 201), stored.text
    job, logs = _launch_as_member(site, "evil", "evil-config")
    assert job["status"] == "Failed", (job, logs)
    assert "ML_CONFIGS/evil.json: overrides.optimizer#lr: " in logs, logs
    assert "starts with '$'" in logs
    assert "Traceback" not in logs
    assert not marker.exists()
    assert _run_files(xnat, "evil-config") == []


def test_c_a_version_changed_on_disk_is_refused_in_the_job(site, xnat, tmp_path):
    marker = tmp_path / "MARK-c"
    install_model(xnat, PROJECT, TISSUES, "tampered")
    assert "tampered/v1/digests.json" in list_paths(xnat, PROJECT, "ML_MODELS")
    digests = json.loads(read_text(xnat, PROJECT, "ML_MODELS", "tampered/v1/digests.json"))
    assert digests["algorithm"] == "sha256" and "configs/train.json" in digests["files"]
    on_disk = archive_file(site.data_dir, PROJECT, "ML_MODELS", "tampered/v1/configs/train.json")
    train = json.loads(on_disk.read_text())
    train["learning_rate"] = payload(marker)  # the optimizer's lr is "@learning_rate"
    on_disk.write_text(json.dumps(train))
    config = tiny_config(model={"name": "tampered", "version": "1"})
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(config))
    push_config(xnat, PROJECT, path)
    job, logs = _launch_as_member(site, "tampered", "tampered-model")
    assert job["status"] == "Failed", (job, logs)
    assert "model tampered v1: configs/train.json differs from its digest" in logs, logs
    assert "Traceback" not in logs
    assert not marker.exists()
    assert _run_files(xnat, "tampered-model") == []


def test_a_version_without_digests_is_refused(site, xnat, tmp_path):
    """An older xnat-ml stored versions without digests.json: they cannot be verified."""
    pulled = pull_model(xnat, PROJECT, "tissues", 1, tmp_path / "tissues")
    assert not (pulled / "digests.json").exists()  # a pulled folder is a model folder
    files = {f"legacy/v1/{p.relative_to(pulled).as_posix()}": p
             for p in pulled.rglob("*") if p.is_file()}  # fmt: skip
    upload_tree(xnat, PROJECT, "ML_MODELS", files, content="ML_MODEL")
    path = tmp_path / "legacy.json"
    path.write_text(json.dumps(tiny_config(model={"name": "legacy", "version": "1"})))
    push_config(xnat, PROJECT, path)
    request = TrainRequest(project=PROJECT, config="legacy", run_id="legacy-run",
                           work_dir=tmp_path / "work", cache=tmp_path / "cache")  # fmt: skip
    with pytest.raises(XnatMlError) as refused:
        train_in_project(xnat, request)
    assert str(refused.value) == (
        "model legacy v1: has no digests.json (installed by an older xnat-ml), so its bundle "
        "cannot be verified; install or promote it again as a new version"
    )
    assert _run_files(xnat, "legacy-run") == []


def test_a_forged_run_is_neither_resumed_nor_promoted(site, xnat, tmp_path):
    """A run's files in ML_RUNS are resumed and promoted only as prepared: its bundle snapshot
    must match its model version's digests, its overrides must be its config's."""
    marker = tmp_path / "MARK-run"
    request = TrainRequest(project=PROJECT, config="tiny", run_id="forged",
                           work_dir=tmp_path / "first", cache=tmp_path / "cache")  # fmt: skip
    assert train_in_project(xnat, request)["state"] == "completed"

    def stored(path: str) -> Path:
        return archive_file(site.data_dir, PROJECT, "ML_RUNS", f"forged/{path}")

    status = json.loads(stored("status.json").read_text())
    stored("status.json").write_text(json.dumps({**status, "state": "failed"}))  # resumable
    train_file, record_file = stored("bundle/configs/train.json"), stored("run.json")
    train, record = train_file.read_text(), record_file.read_text()
    train_file.write_text(train.replace('"learning_rate": 0.002', f'"learning_rate": '
                                        f'{json.dumps(payload(marker))}'))  # fmt: skip
    assert train_file.read_text() != train
    again = TrainRequest(project=PROJECT, config="tiny", run_id="forged",
                         work_dir=tmp_path / "again", cache=tmp_path / "cache")  # fmt: skip
    with pytest.raises(XnatMlError, match=r"^run forged: bundle of model tissues v1: "
                       r"configs/train.json differs from its digest"):  # fmt: skip
        train_in_project(xnat, again)
    train_file.write_text(train)
    forged = json.loads(record)
    forged["bundle_overrides"]["learning_rate"] = payload(marker)
    record_file.write_text(json.dumps(forged))
    with pytest.raises(XnatMlError, match=r"^run forged: run.json holds bundle overrides its "
                       r"config.json does not make"):  # fmt: skip
        train_in_project(xnat, TrainRequest(project=PROJECT, config="tiny", run_id="forged",
                         work_dir=tmp_path / "third", cache=tmp_path / "cache"))  # fmt: skip
    stored("status.json").write_text(json.dumps(status))  # completed again, still forged
    with pytest.raises(XnatMlError, match=r"run.json holds bundle overrides"):
        promote_in_project(xnat, PROJECT, "forged", "from-forged")
    assert not marker.exists()
    assert "from-forged" not in list_models(xnat, PROJECT)
