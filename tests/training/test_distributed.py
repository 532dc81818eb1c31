"""Data-parallel training on two CPU processes (gloo): the same code path torchrun takes on
several GPUs with NCCL, which this machine does not have."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from runner_process import kill_after_checkpoint, launch
from synthetic import tiny_config, write_dataset
from template_paths import TISSUES

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import TRAIN_CONFIG
from xnat_ml.training.config import parse_config
from xnat_ml.training.distributed import SINGLE, Placement, overlay
from xnat_ml.training.runner import execute_run, prepare_run

TWO_CPUS = {"processes": 2, "gpus": 0}
EPOCHS = 4


def _state_keys(path: Path) -> set[str]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return set(state.get("network", state))


def test_two_processes_train_one_run(tmp_path: Path) -> None:
    """Each process takes half of every epoch; rank 0 writes the run, mirrored at each
    checkpoint; the checkpoints hold the plain network (no DDP ``module.`` prefix)."""
    data = write_dataset(tmp_path / "data", n_train=4, n_val=2)
    run = prepare_run(tmp_path / "run", tiny_config(epochs=EPOCHS, resources=TWO_CPUS),
                      TISSUES, data)  # fmt: skip
    assert run.record()["processes"] == 2
    synced: list[tuple[str, list[str]]] = []

    def on_sync(run, changed):
        synced.append((run.status()["state"], list(changed)))

    status = execute_run(run.path, on_sync=on_sync)

    # 4 cases, batch 2, 2 processes: one iteration an epoch (two with one process).
    assert (status["state"], status["epoch"], status["iteration"]) == ("completed", EPOCHS, EPOCHS)
    rows = run.metrics()
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))
    assert all(0 <= float(row["val_mean_dice"]) <= 1 for row in rows)
    for name in ("model.pt", "latest.pt"):
        keys = _state_keys(run.file(name))
        assert keys and not any(key.startswith("module.") for key in keys), name
    assert len(synced) >= 2 and synced[-1][0] == "completed"
    assert {"latest.pt", "model.pt", "status.json"} <= {p for _, batch in synced for p in batch}
    log = run.file("train.log").read_text()
    assert "resuming run" not in log and f"run {run.run_id} completed" in log


def _processes_on(run_dir: Path) -> list[int]:
    """Live processes whose command line names ``run_dir``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(run_dir).encode() in (proc / "cmdline").read_bytes():
                stat = (proc / "stat").read_text()
                if stat.rpartition(")")[2].split()[0] != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_killed_parallel_run_resumes_like_an_unkilled_one(tmp_path: Path) -> None:
    """SIGKILL to the launcher and every worker mid-run; the relaunch continues from latest.pt
    and ends with the numbers of a parallel run that was never killed."""
    data = write_dataset(tmp_path / "data", n_train=4, n_val=2)
    config = tiny_config(epochs=EPOCHS, resources=TWO_CPUS)
    killed = prepare_run(tmp_path / "killed", config, TISSUES, data)
    process = launch(killed.path, tmp_path / "killed.out")
    # The launcher and torchrun; the workers run in sessions of their own.
    died_after = kill_after_checkpoint(process, killed.path, tmp_path / "killed.out", 2, group=True)
    assert 2 <= died_after < EPOCHS
    deadline = time.monotonic() + 30
    while _processes_on(killed.path):  # the workers follow their torchrun (PR_SET_PDEATHSIG)
        assert time.monotonic() < deadline, (
            f"workers outlived their launcher: {_processes_on(killed.path)}"
        )
        time.sleep(0.1)

    relaunch = launch(killed.path, tmp_path / "relaunch.out")
    assert relaunch.wait(timeout=300) == 0, (tmp_path / "relaunch.out").read_text()[-3000:]
    assert killed.status()["state"] == "completed"
    assert f"resuming run killed at epoch {died_after}" in killed.file("train.log").read_text()

    reference = prepare_run(tmp_path / "reference", config, TISSUES, data)
    execute_run(reference.path)
    for ours, theirs in zip(killed.metrics(), reference.metrics(), strict=True):
        for column in ("train_loss", "val_mean_dice"):
            assert abs(float(ours[column]) - float(theirs[column])) < 1e-6, column


def test_a_nan_in_one_process_stops_every_process(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_train=4, n_val=2, nan_image=True)
    run = prepare_run(tmp_path / "run", tiny_config(epochs=3, resources=TWO_CPUS), TISSUES, data)
    status = execute_run(run.path)
    assert (status["state"], status["iteration"]) == ("nan", 1)


def test_gpus_the_machine_lacks_are_refused_before_any_work(tmp_path: Path) -> None:
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has two GPUs")
    data = write_dataset(tmp_path / "data", n_train=2, n_val=1)
    config = tiny_config(resources={"gpus": 2}, device="cuda")
    with pytest.raises(XnatMlError, match=r"^run run: asks for 2 GPUs and this machine sees \d"):
        prepare_run(tmp_path / "run", config, TISSUES, data)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("training", "resources", "message"),
    [
        ({}, {"gpus": 2, "processes": 3}, r"resources\.processes: 3 processes on 2 GPUs"),
        ({"device": "cuda:1"}, {"gpus": 2}, r"training\.device: 'cuda:1' does not fit 2 proc"),
        ({"device": "cpu"}, {"gpus": 2}, r"training\.device: 'cpu' does not fit 2 processes"),
        ({"device": "cuda"}, {"processes": 2}, r"'cuda' does not fit 2 processes on 0 GPUs"),
        ({}, {"processes": 0}, r"resources\.processes: must be at least 1"),
        ({}, {"processes": "2"}, r"resources\.processes: expected an integer"),
    ],
)
def test_configs_that_cannot_place_their_processes(training, resources, message) -> None:
    with pytest.raises(XnatMlError, match=message):
        parse_config({"model": {"name": "m"}, "dataset": {"name": "d"}, "training": training,
                      "resources": resources}, "cfg.json")  # fmt: skip


def test_processes_default_to_one_per_gpu() -> None:
    def processes(resources):
        return parse_config({"model": {"name": "m"}, "dataset": {"name": "d"},
                             "resources": resources}, "cfg.json").resources.processes  # fmt: skip

    assert (processes({}), processes({"gpus": 1}), processes({"gpus": 4})) == (1, 1, 4)
    assert processes({"processes": 2}) == 2


def test_overlay_names_the_id_a_bundle_lacks() -> None:
    bundle = json.loads((TISSUES / TRAIN_CONFIG).read_text())
    del bundle["network"]
    place = Placement(rank=1, local_rank=1, world=2, cuda=True)
    with pytest.raises(XnatMlError, match=r"lacks the id 'network' that training on 2 processes"):
        overlay(bundle, TISSUES, place, 2, None)
    bundle = json.loads((TISSUES / TRAIN_CONFIG).read_text())
    out = overlay(bundle, TISSUES, place, 1, Path("/scratch"))
    assert out["device"] == "$torch.device('cuda:1')"
    assert out["network"]["device_ids"] == ["@device"]
    assert out["validate#sampler"]["even_divisible"] is True  # 1 case, 2 ranks: padded
    assert out["ckpt_dir"] == "/scratch/models"
    assert SINGLE.primary and not place.primary
