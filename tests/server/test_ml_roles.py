"""Finding 4 replayed over HTTP: what a Member, an Owner and a Collaborator may do to the ML_*
resources, archive deletes and jobs on the embedded server (store/ml_assets.py, docs/server.md).

The Owner installs a model version and a config, the Member tries to delete, forge or replace
them; each refusal must leave the bytes as they were. The allowed paths are tried alongside.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
from archive_state import assert_consistent
from test_delete_faults import _crash
from test_identity import install_probe, launch, wait_final

from xnat_ml.cli import main
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.connection import connect
from xnat_ml.xnat.roles import project_role, require_role

TEMPLATE_CONFIG = Path(__file__).resolve().parents[2] / "training_configs/sample-tissues-cpu.json"

TRAIN = b'{"optimizer#lr": 0.001}'
CARD = b'{"name": "tissues", "version": "1"}'


@pytest.fixture
def people(xnat_server, project):
    """name → requests session, for an Owner, two Members and a Collaborator of `project`."""
    found = {}
    for name, role in (("mlr_owner", "Owner"), ("mlr_member", "Member"),
                       ("mlr_member2", "Member"), ("mlr_collab", "Collaborator")):  # fmt: skip
        xnat_server.add_user(name, f"pw-{name}", project, role)
        found[name.removeprefix("mlr_")] = xnat_server.session(name, f"pw-{name}")
    return found


@pytest.fixture
def files(xnat_server, project):
    """`files(label, path)`: the URL of a file in a project resource."""
    base = f"{xnat_server.url}/data/projects/{project}/resources"
    return lambda label, path="": f"{base}/{label}/files/{path}".rstrip("/")


@pytest.fixture
def installed(people, files):
    """The Owner's model version tissues/v1 and config base.json."""
    owner = people["owner"]
    owner.put(files("ML_MODELS", "tissues/v1/configs/train.json"), data=TRAIN).raise_for_status()
    owner.put(files("ML_MODELS", "tissues/v1/model.json"), data=CARD).raise_for_status()
    owner.put(files("ML_CONFIGS", "base.json"), data=b'{"epochs": 2}').raise_for_status()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_member_cannot_replace_or_add_to_what_owners_install(people, files, installed):
    member, collab = people["member"], people["collab"]
    train = files("ML_MODELS", "tissues/v1/configs/train.json")
    forged = b'{"optimizer#lr": "$exec(1)"}'
    answer = member.put(train, params={"overwrite": "true"}, data=forged)
    assert answer.status_code == 403
    assert "ML_MODELS: only project Owners may write here" in answer.text
    assert member.put(files("ML_MODELS", "tissues/v2/model.json"), data=CARD).status_code == 403
    bundle = _zip({"tissues/v2/model.json": CARD})
    upload = files("ML_MODELS", "upload.zip")
    assert member.put(upload, params={"extract": "true"}, data=bundle).status_code == 403
    config = files("ML_CONFIGS", "base.json")
    answer = member.put(config, params={"overwrite": "true"}, data=b'{"epochs": 9}')
    assert answer.status_code == 403 and "ML_CONFIGS" in answer.text
    assert member.put(files("ML_MODELS", "region2MaskValueMap.txt"), data=b"x=1").status_code == 403
    assert collab.put(files("ML_DATASETS", "d/v1/dataset_0.json"), data=b"{}").status_code == 403
    # numeric resource id instead of the label: the same rule
    rows = member.get(files("ML_MODELS").rsplit("/", 2)[0], params={"format": "json"}).json()
    [pk] = [r["xnat_abstractresource_id"] for r in rows["ResultSet"]["Result"]
            if r["label"] == "ML_MODELS"]  # fmt: skip
    by_id = files(pk, "tissues/v1/configs/train.json")
    assert member.put(by_id, params={"overwrite": "true"}, data=forged).status_code == 403
    assert member.get(train).content == TRAIN
    assert member.get(config).content == b'{"epochs": 2}'
    assert member.get(files("ML_MODELS", "tissues/v2/model.json")).status_code == 404
    # beside a version, derived results are the Members' to write
    derived = files("ML_MODELS", "tissues/v1.derived/eval.json")
    assert member.put(derived, data=b'{"dice": 0.8}').status_code == 200


def test_model_versions_are_write_once_for_owners_too(people, files, installed):
    owner = people["owner"]
    train = files("ML_MODELS", "tissues/v1/configs/train.json")
    answer = owner.put(train, params={"overwrite": "true"}, data=b'{"optimizer#lr": 0.5}')
    assert answer.status_code == 409
    assert "ML_MODELS/tissues/v1/configs/train.json: model versions are write-once" in answer.text
    assert owner.put(train, params={"overwrite": "true"}, data=TRAIN).status_code == 200  # retry
    assert owner.put(train, data=TRAIN).status_code == 200
    bundle = _zip({"tissues/v1/model.json": CARD, "tissues/v1/configs/train.json": b"{}"})
    upload = files("ML_MODELS", "upload.zip")
    answer = owner.put(upload, params={"extract": "true", "overwrite": "true"}, data=bundle)
    assert answer.status_code == 409
    assert owner.get(train).content == TRAIN
    assert owner.delete(train).status_code == 409
    # an Owner deletes the whole version, and only it
    owner.put(files("ML_MODELS", "tissues/v1.derived/eval.json"), data=b"{}").raise_for_status()
    owner.put(files("ML_MODELS", "tissues/v10/model.json"), data=CARD).raise_for_status()
    assert people["member"].delete(files("ML_MODELS", "tissues/v1")).status_code == 403
    assert owner.delete(files("ML_MODELS", "tissues/v1")).status_code == 200
    listed = owner.get(files("ML_MODELS"), params={"format": "json"}).json()["ResultSet"]["Result"]
    assert sorted(r["Name"] for r in listed) == ["eval.json", "model.json"]
    assert owner.get(train).status_code == 404
    assert owner.delete(files("ML_MODELS", "tissues/v1")).status_code == 404
    # the version number is free again: a new v1 installs
    owner.put(files("ML_MODELS", "tissues/v1/model.json"), data=CARD).raise_for_status()


def test_members_write_dataset_versions_once(people, files):
    member, owner = people["member"], people["owner"]
    datalist = files("ML_DATASETS", "lungs/v1/dataset_0.json")
    assert member.put(datalist, data=b'{"training": []}').status_code == 200
    assert member.put(datalist, data=b'{"training": []}').status_code == 200  # idempotent
    answer = member.put(datalist, params={"overwrite": "true"}, data=b'{"training": [1]}')
    assert answer.status_code == 409 and "dataset versions are write-once" in answer.text
    assert member.delete(datalist).status_code == 403
    assert member.delete(files("ML_DATASETS", "lungs/v1")).status_code == 403
    assert owner.delete(datalist).status_code == 409
    assert owner.delete(files("ML_DATASETS", "lungs/v1")).status_code == 200
    assert member.get(datalist).status_code == 404


def test_a_run_belongs_to_its_first_writer_and_is_sealed_when_completed(people, files):
    member, other, owner = people["member"], people["member2"], people["owner"]
    status = files("ML_RUNS", "r1/status.json")
    assert member.put(status, data=b'{"state": "running"}').status_code == 200
    stray = member.put(files("ML_RUNS", "stray.txt"), data=b"x")  # no run folder: no owner
    assert stray.status_code == 400 and "files belong in a run folder" in stray.text
    for intruder in (other, owner):
        answer = intruder.put(status, params={"overwrite": "true"}, data=b'{"state": "completed"}')
        assert answer.status_code == 403
        assert "ML_RUNS/r1: the run belongs to mlr_member" in answer.text
        assert intruder.put(files("ML_RUNS", "r1/model.pt"), data=b"w").status_code == 403
    assert member.put(status, params={"overwrite": "true"}, data=b'{"state": "training"}').ok
    assert member.put(files("ML_RUNS", "r1/model.pt"), data=b"weights").status_code == 200
    done = json.dumps({"state": "completed", "best": 0.7}).encode()
    assert member.put(status, params={"overwrite": "true"}, data=done).status_code == 200
    assert member.put(status, params={"overwrite": "true"}, data=done).status_code == 200
    answer = member.put(status, params={"overwrite": "true"}, data=b'{"state": "completed"}')
    assert answer.status_code == 409 and "run r1 is completed" in answer.text
    assert member.put(files("ML_RUNS", "r1/extra.txt"), data=b"x").status_code == 409
    assert member.get(status).content == done
    # nobody deletes a run's files one by one; Members never delete; Owners delete whole runs
    assert member.delete(status).status_code == 403
    assert owner.delete(status).status_code == 409
    assert member.delete(files("ML_RUNS", "r1")).status_code == 403
    assert member.delete(files("ML_RUNS").rsplit("/files", 1)[0]).status_code == 403
    assert owner.delete(files("ML_RUNS", "r1")).status_code == 200
    assert member.get(status).status_code == 404
    # a run of the Owner's: the Member may not forge its status (finding 4)
    owner.put(files("ML_RUNS", "o1/status.json"), data=b'{"state": "training"}').raise_for_status()
    forged = b'{"state": "completed", "best": 0.99}'
    answer = member.put(files("ML_RUNS", "o1/status.json"), params={"overwrite": "true"},
                        data=forged)  # fmt: skip
    assert answer.status_code == 403
    assert member.put(files("ML_RUNS", "loose.txt"), data=b"x").status_code == 400


def test_members_delete_nothing_in_the_archive(xnat_server, project, people, files, installed):
    member, owner = people["member"], people["owner"]
    base = f"{xnat_server.url}/data/projects/{project}"
    assert member.put(f"{base}/subjects/MS1").status_code == 201
    session = f"{base}/subjects/MS1/experiments/MSE1"
    assert member.put(session, params={"xsiType": "xnat:ctSessionData"}).status_code == 201
    assert member.put(f"{session}/scans/1", params={"xsiType": "xnat:ctScanData"}).ok
    notes = f"{session}/scans/1/resources/NOTES/files/a.txt"
    assert member.put(notes, data=b"a").status_code == 200
    assert member.put(notes, params={"overwrite": "true"}, data=b"b").status_code == 200  # edit
    for url in (notes, notes.rsplit("/files", 1)[0], f"{session}/scans/1", session,
                f"{base}/subjects/MS1", files("ML_CONFIGS", "base.json"),
                files("ML_MODELS").rsplit("/files", 1)[0]):  # fmt: skip
        answer = member.delete(url)
        assert answer.status_code == 403, url
        assert "needs the Owner role" in answer.text
    assert member.get(notes).content == b"b"
    assert owner.delete(notes).status_code == 200
    assert owner.delete(f"{base}/subjects/MS1").status_code == 200
    assert owner.delete(files("ML_CONFIGS", "base.json")).status_code == 200


def test_members_kill_only_their_own_jobs(xnat_server, project, people):
    url = xnat_server.url
    wrapper = install_probe(xnat_server)
    owners_job = launch(xnat_server, people["owner"], project, wrapper, seconds=60)
    members_job = launch(xnat_server, people["member"], project, wrapper, seconds=60)
    try:
        answer = people["member"].post(f"{url}/xapi/containers/{owners_job}/kill")
        assert answer.status_code == 403 and "launched by mlr_owner" in answer.text
        for stranger in (people["member2"], people["collab"]):
            assert stranger.post(f"{url}/xapi/containers/{members_job}/kill").status_code == 403
        people["member"].post(f"{url}/xapi/containers/{members_job}/kill").raise_for_status()
        assert wait_final(xnat_server, members_job)["status"] == "Killed"
        people["owner"].post(f"{url}/xapi/containers/{owners_job}/kill").raise_for_status()
        assert wait_final(xnat_server, owners_job)["status"] == "Killed"
    finally:
        for job in (owners_job, members_job):
            xnat_server.session().post(f"{url}/xapi/containers/{job}/kill")


def test_an_owner_kills_a_members_job(xnat_server, project, people):
    wrapper = install_probe(xnat_server)
    job = launch(xnat_server, people["member"], project, wrapper, seconds=60)
    people["owner"].post(f"{xnat_server.url}/xapi/containers/{job}/kill").raise_for_status()
    assert wait_final(xnat_server, job)["status"] == "Killed"


def test_the_verbs_read_the_callers_role(xnat_server, project, people):
    xnat_server.add_user("mlr_outsider", "pw-mlr_outsider")
    expected = {"mlr_owner": "Owner", "mlr_member": "Member", "mlr_collab": "Collaborator",
                "mlr_outsider": None, xnat_server.user: "Owner"}  # fmt: skip
    xnat_server.session().delete(  # the admin is no member: still an Owner, as site admin
        f"{xnat_server.url}/data/projects/{project}/users/Owners/{xnat_server.user}"
    )
    for user, role in expected.items():
        password = xnat_server.password if user == xnat_server.user else f"pw-{user}"
        with connect(xnat_server.url, user, password) as session:
            assert project_role(session, project) == role, user
    with connect(xnat_server.url, "mlr_member", "pw-mlr_member") as session:
        assert require_role(session, project, "Member", "train") == "Member"
        with pytest.raises(XnatMlError) as refused:
            require_role(session, project, "Owner", "promote")
    assert str(refused.value) == f"project {project}: promote needs the Owner role (you are Member)"
    roles = f"{xnat_server.url}/xapi/users/{xnat_server.user}/roles"
    assert people["member"].get(roles).status_code == 403  # site roles: to the user and admins
    assert xnat_server.session().get(roles).json() == ["Administrator"]


@pytest.mark.parametrize(
    ("verb", "needed"),
    [
        (["promote", "some-run", "--name", "tissues"], "promote needs the Owner role"),
        (["model", "delete", "tissues:1"], "model delete needs the Owner role"),
        (["model", "install", "no-such-dir", "--name", "t"], "model install needs the Owner role"),
        # a valid config: push checks the file itself before it logs in
        (["config", "push", str(TEMPLATE_CONFIG)], "config push needs the Owner role"),
        (["events", "install"], "events install needs the Owner role"),
    ],
)
def test_owner_verbs_refuse_a_member_in_one_line(xnat_server, project, people, capsys, verb,
                                                 needed):  # fmt: skip
    login = ["--project", project, "--url", xnat_server.url, "--user", "mlr_member",
             "--password", "pw-mlr_member"]  # fmt: skip
    assert main([*verb, *login]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"xnat-ml: error: project {project}: {needed} (you are Member)"


def test_member_verbs_refuse_a_collaborator(xnat_server, project, people, capsys, tmp_path):
    login = ["--project", project, "--url", xnat_server.url, "--user", "mlr_collab",
             "--password", "pw-mlr_collab"]  # fmt: skip
    assert main(["train", "--config", "base", *login]) == 1
    assert "train needs the Member role (you are Collaborator)" in capsys.readouterr().err


def test_model_delete_removes_one_whole_version(xnat_server, project, people, files, installed,
                                                capsys):  # fmt: skip
    login = ["--project", project, "--url", xnat_server.url, "--user", "mlr_owner",
             "--password", "pw-mlr_owner"]  # fmt: skip
    assert main(["model", "delete", "tissues:1", *login]) == 0
    assert "ML_MODELS/tissues/v1: deleted" in capsys.readouterr().out
    assert people["owner"].get(files("ML_MODELS", "tissues/v1/model.json")).status_code == 404
    assert main(["model", "delete", "tissues", *login]) == 1
    assert "name the version to delete" in capsys.readouterr().err


@pytest.mark.parametrize(("point", "kept"), [("delete.staged", True), ("delete.committed", False)])
def test_a_version_delete_killed_midway_leaves_all_of_it_or_none(start_xnat_server, point, kept):
    """The server dies before the commit of a whole-version delete (every file still there,
    whole) or after it (none left, on disk either); the archive check is clean after both."""
    server = start_xnat_server("ml-version-delete")
    http = server.session()
    http.put(f"{server.url}/data/projects/MLDEL").raise_for_status()
    base = f"{server.url}/data/projects/MLDEL/resources/ML_MODELS/files/tissues"
    bodies = {f"{base}/v1/{name}": os.urandom(20_000) for name in ("model.pt", "configs/a.json")}
    for url, body in bodies.items():
        http.put(url, data=body).raise_for_status()
    _crash(server, point, f"{base}/v1")
    http = server.session()
    for url, body in bodies.items():
        got = http.get(url)
        assert (got.status_code, got.content) == ((200, body) if kept else (404, got.content))
    assert_consistent(server.data_dir)
    stored = list((server.data_dir / "archive").rglob("model.pt"))
    assert bool(stored) == kept
