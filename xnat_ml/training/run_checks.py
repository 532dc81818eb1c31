"""Is a run folder what its job wrote? Checked before a run is resumed and before it is promoted.

``run.json`` records, when the run is prepared, the sha256 of its config, of every file of its
bundle snapshot and of its data list; ``status.json`` records the sha256 of the checkpoints it
speaks of, and ``latest.pt`` the best metric, its epoch and the best weights' sha256. A run folder
edited since (a config made to run code, a status claiming a better Dice, other weights) fails
these checks with one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.training.bundle import file_sha256
from xnat_ml.training.run_folder import (
    BEST_FILE,
    BUNDLE_DIR,
    COMPLETED,
    CONFIG_FILE,
    LATEST_FILE,
    RunFolder,
)

# Bundle files a run folder may lack: the parent's weights of a fine-tune are not mirrored.
_UNMIRRORED = ("models/",)


def check_record(run: RunFolder, datalist: Path | None = None) -> None:
    """The config, the bundle snapshot and (when given) the data list are as ``run.json``
    recorded them at preparation."""
    record = run.record()
    digests = record.get("digests") or {}
    if not digests.get(CONFIG_FILE) or not isinstance(record.get("bundle_digests"), dict):
        raise XnatMlError(f"run {run.run_id}: run.json records no digests: not a run xnat-ml "
                          "prepared (or prepared by a version before digests)")  # fmt: skip
    _same(run, CONFIG_FILE, run.file(CONFIG_FILE), digests[CONFIG_FILE])
    bundle, recorded = run.file(BUNDLE_DIR), record["bundle_digests"]
    present = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    for extra in sorted(present - set(recorded)):
        raise XnatMlError(f"run {run.run_id}: {BUNDLE_DIR}/{extra}: not in the bundle the run "
                          "was prepared with")  # fmt: skip
    for path, digest in sorted(recorded.items()):
        if path in present:
            _same(run, f"{BUNDLE_DIR}/{path}", bundle / path, digest)
        elif not path.startswith(_UNMIRRORED):
            raise XnatMlError(f"run {run.run_id}: {BUNDLE_DIR}/{path}: missing")
    if datalist is not None and digests.get("datalist"):
        _same(run, f"dataset {record['dataset']['name']} v{record['dataset']['version']} "
              "data list", datalist, digests["datalist"])  # fmt: skip


def check_completed(run: RunFolder) -> dict[str, Any]:
    """A completed run's status agrees with its checkpoints; the status. The best weights and
    latest.pt are the files whose sha256 the status records, and latest.pt (saved by the
    training itself) holds the same last epoch, best metric, best epoch and best weights."""
    import torch

    status = run.status()
    if status.get("state") != COMPLETED:
        raise XnatMlError(f"run {run.run_id}: is {status.get('state')}, not {COMPLETED}")
    recorded = status.get("checkpoints") or {}
    for name in (BEST_FILE, LATEST_FILE):
        if not run.file(name).is_file():
            raise XnatMlError(f"run {run.run_id}: has no {name}")
        if not recorded.get(name):
            raise XnatMlError(f"run {run.run_id}: status.json records no digest of {name}")
        _same(run, name, run.file(name), recorded[name])
    try:
        latest = torch.load(run.file(LATEST_FILE), map_location="cpu", weights_only=True)
        trainer, best = latest["trainer"], latest["best"]
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is refused alike
        raise XnatMlError(f"run {run.run_id}: {LATEST_FILE}: not a readable checkpoint "
                          f"({type(exc).__name__})") from None  # fmt: skip
    claims = {"epoch": (status.get("epoch"), trainer.get("epoch")),
              "best_epoch": (status.get("best_epoch"), best.get("epoch")),
              "best_metric": (status.get("best_metric"), best.get("metric")),
              f"{BEST_FILE} digest": (recorded[BEST_FILE], best.get("sha256"))}  # fmt: skip
    for what, (says, saved) in claims.items():
        if says != saved:
            raise XnatMlError(f"run {run.run_id}: status.json says {what} {says}, its "
                              f"{LATEST_FILE} says {saved}")  # fmt: skip
    return status


def _same(run: RunFolder, what: str, path: Path, digest: str) -> None:
    if not path.is_file():
        raise XnatMlError(f"run {run.run_id}: {what}: missing")
    if file_sha256(path) != digest:
        raise XnatMlError(f"run {run.run_id}: {what}: changed since the run recorded it "
                          "(digest differs)")  # fmt: skip
