"""Runs on tiny synthetic data: the files a run writes, NaN stop, the spleen bundle unedited,
promotion and fine-tuning from the promoted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from synthetic import TINY_NET, tiny_config, write_dataset

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import bundle_digests
from xnat_ml.training.model import validate_model
from xnat_ml.training.promotion import promote
from xnat_ml.training.runner import execute_run, prepare_run


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("blobs"), n_train=2, n_val=1)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory, blobs: Path) -> dict[str, Any]:
    """One completed 2-epoch run of the sample-tissues-cpu template, with its sync calls."""
    from template_paths import TISSUES

    root = tmp_path_factory.mktemp("finished")
    calls: list[list[str]] = []
    run = prepare_run(root / "run-1", tiny_config(), TISSUES, blobs)
    status = execute_run(run.path, on_sync=lambda r, changed: calls.append(list(changed)))
    return {"run": run, "status": status, "calls": calls, "root": root}


def test_run_writes_its_record(finished: dict[str, Any]) -> None:
    run, status = finished["run"], finished["status"]
    assert status["state"] == "completed"
    assert (status["epoch"], status["max_epochs"], status["latest_epoch"]) == (2, 2, 2)
    assert status["metric_name"] == "val_mean_dice" and status["best_metric"] is not None
    for name in ("status.json", "metrics.csv", "train.log", "model.pt", "latest.pt", "curves.png",
                 "run.json", "config.json", "bundle/configs/train.json"):  # fmt: skip
        assert run.file(name).is_file(), name
    assert list(run.file("tensorboard").glob("events.out.tfevents.*"))
    assert run.file("curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = run.metrics()
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert all(row["val_mean_dice"] and row["train_loss"] for row in rows)
    record = run.record()
    assert record["dataset"]["version"] == "3" and record["versions"]["monai"]
    assert record["bundle_overrides"]["train#trainer#max_epochs"] == 2
    latest = torch.load(run.file("latest.pt"), weights_only=True)
    assert latest["trainer"] == {"epoch": 2, "iteration": 2}
    assert {"network", "optimizer", "rng", "best"} <= set(latest)
    best = torch.load(run.file("model.pt"), weights_only=True)
    assert set(best) == set(latest["network"])
    assert "run run-1 completed" in run.file("train.log").read_text()


def test_sync_is_called_at_each_validation_and_at_the_end(finished: dict[str, Any]) -> None:
    calls = finished["calls"]
    assert len(calls) == 3  # epochs 1 and 2, then the end
    assert {"run.json", "config.json", "latest.pt", "model.pt", "status.json"} <= set(calls[0])
    assert "run.json" not in calls[1] and "latest.pt" in calls[1]
    assert "status.json" in calls[2]
    assert not any(Path(p).name.startswith(".") for call in calls for p in call)


def test_nan_loss_stops_the_run(tmp_path: Path) -> None:
    from template_paths import TISSUES

    data = write_dataset(tmp_path / "nan", n_train=2, n_val=1, nan_image=True)
    run = prepare_run(tmp_path / "run", tiny_config(epochs=3), TISSUES, data)
    status = execute_run(run.path)
    assert status["state"] == "nan"
    strict = json.loads(run.file("status.json").read_text(), parse_constant=pytest.fail)
    assert strict["loss"] == "nan"
    assert (status["epoch"], status["iteration"]) == (1, 1)
    assert not run.file("latest.pt").exists()
    with pytest.raises(XnatMlError, match=r"is nan, not completed"):
        promote(run.path, tmp_path / "model", "m", "1")


@pytest.mark.parametrize("processes", [1, 2])
def test_spleen_bundle_trains_unedited(tmp_path: Path, spleen_bundle: Path, processes: int) -> None:
    """As published, on one process and on two (data-parallel through the bundle's ids; its own
    multi_gpu_train.json, NCCL-only, is not used)."""
    data = write_dataset(tmp_path / "ct", n_train=2, n_val=1, values=(1,))
    before = bundle_digests(spleen_bundle)
    config = tiny_config(
        epochs=1, model="spleen_ct_segmentation",
        overrides={"network_def#channels": [4, 8, 16, 32, 64],
                   "train#random_transforms#0#num_samples": 2},
        resources={"processes": processes},
    )  # fmt: skip
    run = prepare_run(tmp_path / "run", config, spleen_bundle, data)
    status = execute_run(run.path)
    assert status["state"] == "completed" and status["best_metric"] is not None
    assert bundle_digests(spleen_bundle) == before
    assert bundle_digests(run.file("bundle")) == before  # the run's snapshot, too
    latest = torch.load(run.file("latest.pt"), weights_only=True)
    assert latest["lr_scheduler"]["last_epoch"] == 1  # the bundle's StepLR was saved


@pytest.mark.parametrize(
    ("name", "data", "overrides"),
    [
        ("ct-organ", {"values": (1,)},
         {"network_def#channels": [4, 8, 16, 32, 64], "train#random_transforms#0#num_samples": 2}),
        ("brain-tumour-4ch", {"values": (2, 1, 4), "channels": 4},
         {"network_def#init_filters": 8}),
    ],
)  # fmt: skip
def test_templates_train(tmp_path: Path, name: str, data: dict, overrides: dict) -> None:
    """The GPU templates run end to end on a CPU for one tiny epoch (4 channels for BraTS)."""
    from template_paths import TEMPLATES

    datalist = write_dataset(tmp_path / "data", n_train=2, n_val=1, **data)
    config = tiny_config(epochs=1, model=name, overrides=overrides, batch_size=1)
    run = prepare_run(tmp_path / "run", config, TEMPLATES / name, datalist)
    status = execute_run(run.path)
    assert status["state"] == "completed" and status["best_metric"] is not None


def test_bound_ids_cannot_be_overridden(tmp_path: Path, blobs: Path) -> None:
    from template_paths import TISSUES

    config = tiny_config(overrides={"train#dataset#data": []})
    with pytest.raises(XnatMlError, match=r"overrides.train#dataset#data: xnat-ml sets this id"):
        prepare_run(tmp_path / "run", config, TISSUES, blobs)
    with pytest.raises(XnatMlError, match=r"has no weights \(models/model.pt\)"):
        prepare_run(tmp_path / "run", tiny_config(), TISSUES, blobs, finetune=True)
    assert not (tmp_path / "run").exists()


def test_promote_then_finetune(tmp_path: Path, finished: dict[str, Any], blobs: Path) -> None:
    run = finished["run"]
    card = promote(run.path, tmp_path / "tissues-2", "tissues", "2")
    checked, _ = validate_model(tmp_path / "tissues-2")
    assert checked == card
    assert card.parent.name == "sample-tissues-cpu" and card.parent.version == "0.1.0"
    assert card.run == "run-1" and card.dataset.version == "3"
    assert card.metrics["val_mean_dice"] == finished["status"]["best_metric"]
    assert card.overrides == TINY_NET  # inference.json needs the smaller channels too
    assert card.labels == {0: "background", 1: "Grey Matter", 2: "White Matter"}
    promoted = torch.load(tmp_path / "tissues-2" / "models" / "model.pt", weights_only=True)
    best = torch.load(run.file("model.pt"), weights_only=True)
    assert all(torch.equal(promoted[k], best[k]) for k in best)
    with pytest.raises(XnatMlError, match=r"already exists"):
        promote(run.path, tmp_path / "tissues-2", "tissues", "2")

    # Fine-tune with a learning rate too small to move a weight: it starts from the promoted one.
    config = tiny_config(epochs=1, learning_rate=1e-12, model="tissues")
    child = prepare_run(tmp_path / "finetune", config, tmp_path / "tissues-2", blobs,
                        finetune=True)  # fmt: skip
    assert execute_run(child.path)["state"] == "completed"
    tuned = torch.load(child.file("latest.pt"), weights_only=True)["network"]
    convs = [k for k in best if k.endswith("conv.weight")]
    assert convs and all(torch.allclose(tuned[k], best[k], atol=1e-6) for k in convs)
    assert json.loads(child.file("run.json").read_text())["parent"]["name"] == "tissues"

    # Weights that do not fit the network: one line naming them, the run marked failed.
    config = tiny_config(epochs=1, model="tissues", overrides={"network_def#channels": [8] * 4})
    wrong = prepare_run(tmp_path / "wrong", config, tmp_path / "tissues-2", blobs, finetune=True)
    with pytest.raises(XnatMlError, match=r"weights .*model.pt: do not fit the bundle's network"):
        execute_run(wrong.path)
    assert wrong.status()["state"] == "failed"
