"""One writer per version (issue 15, finding 8): concurrent promote, model install and dataset
build under one name get distinct, whole versions; a CLI that lost the server after its upload
(or its claim) finds its own version on retry; a claim without files is no version but keeps
its number; a killed install leaves no temporary folder once the next xnat-ml process ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from template_paths import TISSUES
from xnat_project import DEFINITION, TrainingProject, set_up

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "xnat"))
from flaky_proxy import FlakyProxy  # noqa: E402

from xnat_ml.datasets.project_build import build_in_project  # noqa: E402
from xnat_ml.datasets.versions import VERSION_FILES, list_versions, read_file  # noqa: E402
from xnat_ml.layout import MODELS_RESOURCE  # noqa: E402
from xnat_ml.training.project_files import list_paths, read_text  # noqa: E402
from xnat_ml.training.project_models import install_model, list_models  # noqa: E402
from xnat_ml.training.project_train import (  # noqa: E402
    TrainRequest,
    promote_in_project,
    train_in_project,
)
from xnat_ml.xnat import connect  # noqa: E402
from xnat_ml.xnat.queries import list_files  # noqa: E402
from xnat_ml.xnat.uris import project_uri, resource_uri  # noqa: E402

PROJECT = "CLAIMS"
PAIRS = 20
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def claims(xnat_server, tmp_path_factory) -> TrainingProject:
    """A training project with a completed run ``base`` to promote."""
    admin = xnat_server.session()
    admin.put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    work = tmp_path_factory.mktemp("claims")
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, work)
        request = TrainRequest(project=PROJECT, config="tiny", run_id="base",
                               work_dir=work / "work", cache=work / "cache")  # fmt: skip
        assert train_in_project(session, request)["state"] == "completed"
    yield TrainingProject(PROJECT, xnat_server.url, xnat_server.user, xnat_server.password)
    admin.delete(f"{xnat_server.url}/data/projects/{PROJECT}")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    """Pending claim records go to the user's cache: a private one per test."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg"


def _concurrently(server, jobs: list) -> list:
    """Run each job(session) in its own thread with its own session, all released at once."""
    start = threading.Barrier(len(jobs))

    def run(job):
        with connect(server.url, server.user, server.password) as session:
            start.wait()
            return job(session)

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(run, jobs))


def _digests(session, label: str) -> dict[str, str]:
    """path in the resource -> digest, from one listing."""
    rows = list_files(session, resource_uri(project_uri(PROJECT), label))
    return {row["URI"].split("/files/", 1)[1]: row["digest"] for row in rows}


def test_concurrent_promotes_and_installs_get_distinct_whole_versions(claims, xnat_server):
    def promote(session):
        return "promote", promote_in_project(session, PROJECT, "base", "race")[0]

    def install(session):
        return "install", install_model(session, PROJECT, TISSUES, "race")[0]

    done = _concurrently(xnat_server, [promote, install] * PAIRS)
    writer = {number: kind for kind, number in done}
    assert sorted(writer) == list(range(1, 2 * PAIRS + 1)), done  # distinct, no gap
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        assert list_models(session, PROJECT)["race"] == sorted(writer)
        digests = _digests(session, MODELS_RESOURCE)
        tokens, contents = set(), {}
        for number, kind in writer.items():
            folder = f"race/v{number}/"
            card = json.loads(read_text(session, PROJECT, MODELS_RESOURCE, folder + "model.json"))
            assert card["version"] == str(number)
            assert card["run"] == ("base" if kind == "promote" else None), (number, card)
            claim = json.loads(read_text(session, PROJECT, MODELS_RESOURCE, folder + "claim.json"))
            tokens.add(claim["token"])
            files = {p.removeprefix(folder): d for p, d in digests.items() if p.startswith(folder)}
            # the card says its number, and digests.json covers the card: both differ per version
            del files["claim.json"], files["model.json"], files["digests.json"]
            contents.setdefault(kind, files)
            assert files == contents[kind], f"v{number} ({kind}) mixes another writer's files"
    assert len(tokens) == 2 * PAIRS
    assert "models/model.pt" in contents["promote"]
    assert contents["install"] != contents["promote"]


def test_concurrent_dataset_builds_get_distinct_whole_versions(claims, xnat_server, tmp_path):
    def build(seed: int):
        definition = {**DEFINITION, "split": {**DEFINITION["split"], "seed": seed}}
        return lambda session: build_in_project(session, PROJECT, json.dumps(definition),
                                                "racing", cache=tmp_path / "cache")  # fmt: skip

    done = _concurrently(xnat_server, [build(seed) for seed in range(2 * PAIRS)])
    by_number = {build.version.number: build.contents for build in done}
    assert sorted(by_number) == list(range(1, 2 * PAIRS + 1))
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        versions = list_versions(session, PROJECT)["racing"]
        assert [v.number for v in versions] == sorted(by_number)
        for version in versions:
            stored = {f: read_file(session, PROJECT, version, f) for f in VERSION_FILES}
            assert stored == by_number[version.number], f"v{version.number} mixes writers"


def test_a_claim_without_files_is_no_version_but_keeps_its_number(claims, xnat_server):
    http = xnat_server.session()
    for label, name in (("ML_MODELS", "stray"), ("ML_DATASETS", "stray")):
        url = f"{xnat_server.url}/data/projects/{PROJECT}/resources/{label}/files/{name}"
        for number in (1, 2):  # claimed by writers that never uploaded
            http.put(f"{url}/v{number}/claim.json", data=b'{"token": "x"}').raise_for_status()
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        assert "stray" not in list_models(session, PROJECT)
        assert "stray" not in list_versions(session, PROJECT)
        assert install_model(session, PROJECT, TISSUES, "stray")[0] == 3
        built = build_in_project(session, PROJECT, json.dumps(DEFINITION), "stray")
        assert built.version.number == 3
        assert list_models(session, PROJECT)["stray"] == [3]
        assert [v.number for v in list_versions(session, PROJECT)["stray"]] == [3]


def _cli(project: TrainingProject, url: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xnat_ml", *args, "--url", url, "--user", project.user,
         "--password", project.password],
        capture_output=True, text=True, timeout=300, env={**os.environ, **env},
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["model", "dataset"])
@pytest.mark.parametrize("lost", [b"extract=true", b"claim.json"], ids=["upload", "claim"])
def test_a_cli_that_lost_the_server_finds_its_own_version(claims, xnat_server, private_cache,
                                                          tmp_path, kind, lost):  # fmt: skip
    """The server commits the claim (or the version's files), the answer is lost and the
    server stays out of reach: the CLI fails in one line; its retry reports that version."""
    name = f"lost-{kind}-{lost[:5].decode()}"
    (tmp_path / "definition.json").write_text(json.dumps(DEFINITION))
    verb = {"model": ("model", "install", str(TISSUES)),
            "dataset": ("dataset", "build", "--definition", str(tmp_path / "definition.json"))}
    label = {"model": MODELS_RESOURCE, "dataset": "ML_DATASETS"}[kind]
    proxy = FlakyProxy(int(xnat_server.url.rsplit(":", 1)[1]), match=lost)
    env = {"XDG_CACHE_HOME": str(private_cache)}
    command = (*verb[kind], "--project", PROJECT, "--name", name)
    try:
        proxy.arm("gone")
        failed = _cli(claims, proxy.url, *command, env=env)
        assert failed.returncode == 1 and proxy.faults_done == 1, failed.stderr
        last = failed.stderr.strip().splitlines()[-1]  # after the retries' warnings
        assert last.startswith("xnat-ml: error: cannot reach"), failed.stderr
        [record] = (private_cache / "xnat-ml" / "claims").glob("*.json")
        assert json.loads(record.read_text())["number"] == 1
        proxy.down = False
        retried = _cli(claims, proxy.url, *command, env=env)
        assert retried.returncode == 0, retried.stderr
        assert f"{label}/{name}/v1: " in retried.stdout, retried.stdout
    finally:
        proxy.close()
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        paths = list_paths(session, PROJECT, label)
        assert not [p for p in paths if p.startswith(f"{name}/v2/")]
        if kind == "model":
            assert list_models(session, PROJECT)[name] == [1]
            wanted = {p.relative_to(TISSUES).as_posix() for p in TISSUES.rglob("*") if p.is_file()}
        else:
            assert [v.number for v in list_versions(session, PROJECT)[name]] == [1]
            wanted = set(VERSION_FILES)
        assert wanted | {"claim.json"} <= {
            p.removeprefix(f"{name}/v1/") for p in paths if p.startswith(f"{name}/v1/")}
    assert not list((private_cache / "xnat-ml" / "claims").glob("*.json"))  # records done


def _scratch_leftovers(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("xnat-ml"))


@pytest.mark.parametrize("verb", [("model", "install", str(TISSUES)), ("promote", "base")],
                         ids=["install", "promote"])  # fmt: skip
def test_a_killed_writer_leaves_no_temporary_folder(claims, xnat_server, private_cache,
                                                    tmp_path, verb):  # fmt: skip
    """SIGKILL while the version's files are uploading: the folder it worked in is swept by
    the next xnat-ml process, which also finishes the version the killed one claimed."""
    name = f"killed-{verb[0]}"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "XDG_CACHE_HOME": str(private_cache)}
    proxy = FlakyProxy(int(xnat_server.url.rsplit(":", 1)[1]))
    install = [sys.executable, "-m", "xnat_ml", *verb, "--project", PROJECT, "--name", name,
               "--user", claims.user, "--password", claims.password]
    try:
        proxy.arm("hold")
        stuck = subprocess.Popen([*install, "--url", proxy.url], env={**os.environ, **env},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        deadline = time.monotonic() + 120
        while proxy.faults_done == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.faults_done == 1, "the install never reached its upload"
        stuck.send_signal(signal.SIGKILL)
        stuck.wait(timeout=30)
        [root] = _scratch_leftovers(tmp)  # the one scratch root, nothing else in TMPDIR
        [left] = [p for p in (tmp / root).iterdir() if not p.name.startswith(".")]
        assert any(left.rglob("model.json")), "the killed process had its model there"
        done = subprocess.run([*install, "--url", proxy.url], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr
    assert f"ML_MODELS/{name}/v1: " in done.stdout  # the killed one's claim, finished
    assert _scratch_leftovers(tmp) == [root]
    assert not [p for p in (tmp / root).iterdir() if not p.name.startswith(".")]
