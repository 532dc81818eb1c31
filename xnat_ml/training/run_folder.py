"""A run folder: everything one training run writes, laid out so it can be mirrored as is.

| file | written |
|---|---|
| ``run.json`` | once, at preparation: model, dataset, bundle overrides, versions, digests |
| ``config.json`` | once: the training config as given |
| ``bundle/`` | once: the bundle as published (plus the parent's weights for a fine-tune) |
| ``status.json`` | while it runs: state, epoch, iteration, loss, metric, best so far, ETA, and
  the sha256 of the checkpoints it speaks of (``checkpoints``) |
| ``metrics.csv`` | every epoch: epoch, iteration, train loss, validation metrics, lr, time |
| ``train.log``, ``tensorboard/``, ``curves.png`` | while it runs |
| ``validation.png`` | at each validation: Dice per validation case and label |
| ``model.pt`` | at each validation that beats the best so far: the network's weights |
| ``latest.pt`` | at each validation: weights, optimiser, scheduler, epoch, RNG states |
| ``bundle_output/`` | whatever the bundle itself writes to ``ckpt_dir`` and ``output_dir`` |

Checkpoints, status and metrics are written atomically (temp file, fsync, rename).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xnat_ml.atomic import write_bytes_atomic, write_json_atomic
from xnat_ml.training.bundle import read_json_file

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CONFIG_FILE = "config.json"
BUNDLE_DIR = "bundle"
STATUS_FILE = "status.json"
METRICS_FILE = "metrics.csv"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
CURVES_FILE = "curves.png"
VALIDATION_FILE = "validation.png"
BEST_FILE = "model.pt"
LATEST_FILE = "latest.pt"
BUNDLE_OUTPUT_DIR = "bundle_output"
LOCAL_DATALIST = ".datalist"  # the data list's path on this machine after a resume (not mirrored)

# Run states in status.json; the last four are final (only completed cannot be resumed).
RUNNING, COMPLETED, NAN, FAILED, KILLED = "running", "completed", "nan", "failed", "killed"
FINAL_STATES = (COMPLETED, NAN, FAILED, KILLED)

# Not mirrored: the parent's weights (already a model) and the bundle's own copy of model.pt.
_NOT_SYNCED = (f"{BUNDLE_DIR}/models/", f"{BUNDLE_OUTPUT_DIR}/models/")

RunSync = Callable[["RunFolder", Sequence[str]], None]
"""Called as ``on_sync(run, changed)`` at every validation interval and at the end (any final
state): ``changed`` lists the run-relative paths (``/``-separated) of the files that are new or
changed since the last call that returned, every one of them complete on disk. The XNAT layer
uploads them to ML_RUNS/<run id>/, status.json last; an exception it raises means none of them
counts as synced: they are handed over again at the next call."""


@dataclass
class RunFolder:
    path: Path
    _synced: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def record(self) -> dict[str, Any]:
        return read_json_file(self.file(RUN_FILE), f"run {self.path}")

    def status(self) -> dict[str, Any]:
        return read_json_file(self.file(STATUS_FILE), f"run {self.path}")

    def write_status(self, **status: Any) -> None:
        """Replace status.json; a non-finite number is written as a string ("nan"): strict
        JSON readers reject NaN."""
        status = {k: str(v) if isinstance(v, float) and not math.isfinite(v) else v
                  for k, v in status.items()}  # fmt: skip
        status = {"run": self.run_id, **status, "updated": time.time()}
        write_json_atomic(self.file(STATUS_FILE), status)

    def metrics(self) -> list[dict[str, str]]:
        path = self.file(METRICS_FILE)
        if not path.exists():
            return []
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def write_metrics(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rewrite metrics.csv whole (it is small): columns in first-seen order."""
        columns: list[str] = []
        for row in rows:
            columns += [key for key in row if key not in columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_bytes_atomic(self.file(METRICS_FILE), text.getvalue().encode())

    def changed_files(self) -> dict[str, tuple[int, int]]:
        """Run-relative paths new or changed since they were last marked synced (temp files
        excluded), each with the size and time it has now (for ``mark_synced``)."""
        changed = {}
        for path in sorted(self.path.rglob("*")):
            rel = path.relative_to(self.path).as_posix()
            if not path.is_file() or path.name.startswith(".") or rel.startswith(_NOT_SYNCED):
                continue
            stat = path.stat()
            key = (stat.st_size, stat.st_mtime_ns)
            if self._synced.get(rel) != key:
                changed[rel] = key
        return changed

    def mark_synced(self, files: dict[str, tuple[int, int]]) -> None:
        """These files (as ``changed_files`` saw them) are stored: not handed over again unless
        they change. A file replaced since is seen as changed (its time differs)."""
        self._synced.update(files)


def sync_run(run: RunFolder, on_sync: RunSync | None) -> str | None:
    """Hand the changed files to ``on_sync``; they count as synced only if it returns. An upload
    failure must not kill training: it is logged in one line and returned (None: all stored)."""
    if on_sync is None:
        return None
    changed = run.changed_files()
    try:
        on_sync(run, list(changed))
    except Exception as exc:  # noqa: BLE001 - the run matters more than one upload
        log.warning("run %s: syncing files failed (%s); they are tried again at the next sync",
                    run.run_id, exc)  # fmt: skip
        return str(exc)
    run.mark_synced(changed)
    return None
