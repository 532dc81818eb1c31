"""`xnat-ml model evaluate` and `model export` on the embedded server: a briefly trained
sample-tissues-cpu model scored on a dataset's testing split, the scores stored beside the
version (never in it) and equal to label_scores on the same predictions, `model show` printing
them; a Collaborator refused; each bad input one line with nothing stored."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from xnat_ml.datasets.fetch import fetch_dataset
from xnat_ml.datasets.project_build import build_in_project
from xnat_ml.inference import infer, label_scores, load_model
from xnat_ml.training.project_files import list_paths, read_text
from xnat_ml.training.project_models import install_model, pull_model
from xnat_ml.training.project_train import TrainRequest, promote_in_project, train_in_project
from xnat_ml.xnat import connect

# The training tests' project set-up (tests/training is no package, as no test folder is).
sys.path.append(str(Path(__file__).resolve().parents[1] / "training"))
from template_paths import TISSUES  # noqa: E402
from xnat_project import DEFINITION, TrainingProject, set_up  # noqa: E402

sys.path.append(str(Path(__file__).resolve().parents[1] / "xnat"))
from flaky_proxy import FlakyProxy  # noqa: E402

PROJECT = "EVALX"
MODEL = "tissues-eval"
DERIVED = f"{MODEL}/v1.derived"
EVALUATION = f"{DERIVED}/evaluations/heldout-v1-testing"
HELDOUT = {**DEFINITION, "split": {"training": 50, "validation": 17, "testing": 33, "seed": 1}}


@pytest.fixture(scope="module")
def evalx(xnat_server, tmp_path_factory):
    """The training project with a held-out dataset, a model trained briefly and promoted, and
    a Member and a Collaborator."""
    work = tmp_path_factory.mktemp("evalx")
    xnat_server.session().put(f"{xnat_server.url}/data/projects/{PROJECT}").raise_for_status()
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as session:
        set_up(session, PROJECT, work)
        build_in_project(session, PROJECT, json.dumps(HELDOUT), "heldout")
        request = TrainRequest(project=PROJECT, config="tiny", run_id="base",
                               work_dir=work / "work", cache=work / "cache")  # fmt: skip
        assert train_in_project(session, request)["state"] == "completed"
        promote_in_project(session, PROJECT, "base", MODEL)
    people = {}
    for role in ("Member", "Collaborator"):
        name = f"evalx_{role.lower()}"  # unique in the session-wide server (events uses ev_)
        xnat_server.add_user(name, f"pw-{name}", PROJECT, role)
        people[role] = TrainingProject(PROJECT, xnat_server.url, name, f"pw-{name}")
    yield people, work
    xnat_server.session().delete(f"{xnat_server.url}/data/projects/{PROJECT}")


@pytest.fixture
def xnat(xnat_server):
    with connect(xnat_server.url, xnat_server.user, xnat_server.password) as opened:
        yield opened


def _version_files(xnat) -> list[str]:
    return [p for p in list_paths(xnat, PROJECT, "ML_MODELS") if p.startswith(f"{MODEL}/v1/")]


def test_evaluate_stores_scores_beside_the_version_and_show_prints_them(evalx, xnat, tmp_path):
    people, work = evalx
    before = _version_files(xnat)
    done = people["Member"].cli("model", "evaluate", MODEL, "--project", PROJECT, "--dataset",
                                "heldout", "--cache", str(work / "cache"), "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert f"{MODEL} v1 on heldout v1 (testing, " in done.stdout
    for name in ("Grey Matter", "White Matter"):
        assert f"| **mean** | {name} |" in done.stdout
    stored = {p for p in list_paths(xnat, PROJECT, "ML_MODELS") if p.startswith(DERIVED)}
    assert _version_files(xnat) == before  # nothing inside the write-once version
    metrics = json.loads(read_text(xnat, PROJECT, "ML_MODELS", f"{EVALUATION}/metrics.json"))
    overlays = {f"{EVALUATION}/overlays/{row['case']}.png" for row in metrics["cases"]}
    assert stored == {f"{EVALUATION}/{f}" for f in ("metrics.json", "metrics.md", "dice.png")
                      } | overlays  # fmt: skip
    for picture in (f"{EVALUATION}/dice.png", min(overlays)):
        png = xnat.get(f"/data/projects/{PROJECT}/resources/ML_MODELS/files/{picture}").content
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert Image.open(io.BytesIO(png)).size == (256, 256)
    assert (metrics["model"], metrics["dataset"], metrics["split"]) == (
        {"name": MODEL, "version": "1"}, {"name": "heldout", "version": "1"}, "testing")
    assert metrics["labels"] == {"1": "Grey Matter", "2": "White Matter"}
    assert read_text(xnat, PROJECT, "ML_MODELS", f"{EVALUATION}/metrics.md") in done.stdout

    # the same predictions scored directly
    model = pull_model(xnat, PROJECT, MODEL, 1, tmp_path / "model")
    fetched = fetch_dataset(xnat, PROJECT, "heldout", tmp_path / "data", cache=work / "cache",
                            progress=False)  # fmt: skip
    testing = json.loads(fetched.datalist.read_text())["testing"]
    assert [row["case"] for row in metrics["cases"]] == [item["session"] for item in testing]
    for item, row in zip(testing, metrics["cases"], strict=True):
        pred = infer(model, [fetched.datalist.parent / item["image"]])
        direct = label_scores(pred, nib.load(fetched.datalist.parent / item["label"]), [1, 2])
        for value, scores in direct.items():
            got = row["scores"][str(value)]
            assert abs(got["dice"] - scores.dice) < 1e-6
            assert abs(got["volume_difference_ml"] - scores.volume_difference) < 1e-6
            assert got["hd95_mm"] == (None if np.isinf(scores.hd95) else
                                      pytest.approx(scores.hd95, abs=1e-6))  # fmt: skip
    for value in ("1", "2"):
        dice = [row["scores"][value]["dice"] for row in metrics["cases"]]
        assert abs(metrics["mean"][value]["dice"] - sum(dice) / len(dice)) < 1e-6

    shown = json.loads(people["Member"].cli("model", "show", MODEL, "--project", PROJECT).stdout)
    assert shown["name"] == MODEL and shown["latest_testing"] == {
        "dataset": "heldout:1", "split": "testing", "cases": len(testing),
        "created": metrics["created"], "mean_dice": metrics["mean"]["all"]["dice"],
        "dice": {"Grey Matter": metrics["mean"]["1"]["dice"],
                 "White Matter": metrics["mean"]["2"]["dice"]},
    }  # fmt: skip


def test_export_stores_a_torchscript_that_matches_the_network(evalx, xnat, tmp_path):
    people, _ = evalx
    before = _version_files(xnat)
    done = people["Member"].cli("model", "export", f"{MODEL}:1", "--project", PROJECT,
                                "--device", "cpu")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"ML_MODELS/{DERIVED}/export/model.ts: stored" in done.stdout
    record = json.loads(read_text(xnat, PROJECT, "ML_MODELS", f"{DERIVED}/export/export.json"))
    assert record["input_shape"][:2] == [1, 1] and 0 <= record["max_abs_difference"] < 1e-4
    assert _version_files(xnat) == before
    answer = xnat.get(f"/data/projects/{PROJECT}/resources/ML_MODELS/files/{DERIVED}/export/"
                      "model.ts")  # fmt: skip
    (tmp_path / "model.ts").write_bytes(answer.content)
    loaded = torch.jit.load(str(tmp_path / "model.ts"))
    network = load_model(pull_model(xnat, PROJECT, MODEL, 1, tmp_path / "model")).network
    sample = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(loaded(sample), network(sample), atol=1e-5)


def test_a_collaborator_is_refused_and_nothing_is_stored(evalx, xnat):
    people, work = evalx
    before = list_paths(xnat, PROJECT, "ML_MODELS")
    for verb, extra in (("evaluate", ["--dataset", "heldout"]), ("export", [])):
        done = people["Collaborator"].cli("model", verb, MODEL, "--project", PROJECT, *extra)
        assert done.returncode == 1
        assert done.stderr.strip() == (f"xnat-ml: error: project {PROJECT}: model {verb} needs "
                                       "the Member role (you are Collaborator)")  # fmt: skip
    assert list_paths(xnat, PROJECT, "ML_MODELS") == before


def test_bad_input_is_one_line_and_stores_nothing(evalx, xnat, tmp_path):
    people, work = evalx
    labelmap = tmp_path / "grey.txt"
    labelmap.write_text("Grey Matter=1\n")
    install_model(xnat, PROJECT, TISSUES, "grey-only", labelmap)
    before = list_paths(xnat, PROJECT, "ML_MODELS")
    cases = {
        (f"{MODEL}:9", "heldout"): f"model {MODEL}: no version v9 in project {PROJECT} (v1)",
        ("nope", "heldout"): f"model nope: not in project {PROJECT}'s ML_MODELS",
        (MODEL, "heldout:4"): f"dataset heldout: no version v4 in project {PROJECT} (v1)",
        (MODEL, "blobs"): "dataset blobs v1: its testing split is empty; nothing to evaluate",
        ("grey-only", "heldout"): "dataset heldout v1: label 2 'White Matter' is not in "
                                  "model grey-only v1's label map (1 Grey Matter)",
    }  # fmt: skip
    for (model, dataset), message in cases.items():
        done = people["Member"].cli("model", "evaluate", model, "--project", PROJECT,
                                    "--dataset", dataset, "--cache", str(work / "cache"))
        assert done.returncode == 1, done.stdout
        assert done.stderr.strip() == f"xnat-ml: error: {message}", done.stderr
    assert list_paths(xnat, PROJECT, "ML_MODELS") == before


@pytest.mark.parametrize("fault", ["cut_request", "hold"])
def test_an_upload_broken_mid_write_stores_all_or_nothing(evalx, xnat_server, xnat, fault):
    """The evaluation's upload cut mid-body (the retry stores it whole), or held until the CLI
    is killed (nothing stored): never some of the three files."""
    people, work = evalx
    split = {"cut_request": "validation", "hold": "training"}[fault]
    folder = f"{DERIVED}/evaluations/heldout-v1-{split}/"
    member = people["Member"]
    proxy = FlakyProxy(int(xnat_server.url.rsplit(":", 1)[1]), cut_after=2000)
    command = [sys.executable, "-m", "xnat_ml", "model", "evaluate", MODEL, "--project", PROJECT,
               "--dataset", "heldout", "--split", split, "--cache", str(work / "cache"),
               "--device", "cpu", "--url", proxy.url, "--user", member.user,
               "--password", member.password]  # fmt: skip
    try:
        proxy.arm(fault)
        if fault == "cut_request":
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            assert done.returncode == 0 and proxy.faults_done == 1, done.stderr
        else:
            stuck = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
            deadline = time.monotonic() + 300
            while proxy.faults_done == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
            stuck.kill()
            stuck.wait(timeout=30)
            assert proxy.faults_done == 1, "the evaluation never reached its upload"
    finally:
        proxy.close()
    stored = sorted(p.removeprefix(folder) for p in list_paths(xnat, PROJECT, "ML_MODELS")
                    if p.startswith(folder))  # fmt: skip
    if fault == "hold":
        assert stored == []
        return
    metrics = json.loads(read_text(xnat, PROJECT, "ML_MODELS", f"{folder}metrics.json"))
    assert metrics["split"] == "validation" and metrics["cases"]
    assert stored == ["dice.png", "metrics.json", "metrics.md",
                      *sorted(f"overlays/{row['case']}.png" for row in metrics["cases"])]
