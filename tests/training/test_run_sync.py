"""A run's files count as synced only once ``on_sync`` returned: what a failing call was handed
comes again at the next call, and a run that cannot store its end is not `completed`."""

from __future__ import annotations

from pathlib import Path

import pytest
from synthetic import tiny_config, write_dataset
from template_paths import TISSUES

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import file_sha256
from xnat_ml.training.runner import execute_run, prepare_run


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("blobs"), n_train=2, n_val=1)


def test_failed_sync_hands_the_same_files_over_again(tmp_path: Path, blobs: Path) -> None:
    calls: list[list[str]] = []

    def flaky(run, changed):
        calls.append(list(changed))
        if len(calls) == 1:
            raise XnatMlError("ML_RUNS/r/latest.pt: no space left on the XNAT server (507)")

    run = prepare_run(tmp_path / "r", tiny_config(epochs=3), TISSUES, blobs)
    status = execute_run(run.path, on_sync=flaky)
    assert status["state"] == "completed"
    first, second = calls[0], calls[1]  # epochs 1 and 2
    assert {"latest.pt", "model.pt", "status.json", "run.json", "config.json"} <= set(first)
    assert set(first) <= set(second)  # nothing of the failed call counted as stored
    assert "run.json" not in calls[2]  # what the second call stored is not handed over again
    assert status["checkpoints"] == {name: file_sha256(run.file(name))
                                     for name in ("model.pt", "latest.pt")}  # fmt: skip


def test_end_that_cannot_be_stored_is_failed_not_completed(tmp_path: Path, blobs: Path) -> None:
    stored: list[str] = []

    def full_at_the_end(run, changed):
        if run.status()["state"] in ("completed", "failed"):
            raise XnatMlError("ML_RUNS/r/latest.pt: no space left on the XNAT server (507)")
        stored.extend(changed)

    run = prepare_run(tmp_path / "r", tiny_config(epochs=2), TISSUES, blobs)
    with pytest.raises(XnatMlError) as failed:
        execute_run(run.path, on_sync=full_at_the_end)
    assert str(failed.value) == (
        "run r: failed: ML_RUNS/r/latest.pt: no space left on the XNAT server (507)"
    )
    status = run.status()
    assert status["state"] == "failed" and status["message"].startswith("not stored: ML_RUNS")
    # Relaunched with room: nothing to train, everything stored, completed.
    calls: list[list[str]] = []
    status = execute_run(run.path, on_sync=lambda r, changed: calls.append(list(changed)))
    assert status["state"] == "completed" and status["epoch"] == 2
    assert {"latest.pt", "model.pt", "status.json"} <= set(calls[-1])
