"""What is kept BESIDE a model version, in ``ML_MODELS/<name>/v<N>.derived/``: evaluations and
exports made later (the version itself is write-once). Written by `xnat-ml model evaluate` and
`model export` (xnat_ml/inference/project_evaluate.py); read here for `model show`."""

from __future__ import annotations

import re
from typing import Any

from xnat.session import XNATSession

from xnat_ml.layout import EVALUATION_FILE, MODELS_RESOURCE
from xnat_ml.training.limits import parse_json
from xnat_ml.training.project_files import list_paths, read_text


def derived_folder(name: str, number: int) -> str:
    return f"{name}/v{number}.derived"


def evaluation_folder(name: str, number: int, dataset: str, dataset_number: int, split: str) -> str:
    return f"{derived_folder(name, number)}/evaluations/{dataset}-v{dataset_number}-{split}"


def latest_evaluation(
    session: XNATSession, project: str, name: str, number: int, split: str = "testing"
) -> dict[str, Any] | None:
    """The newest stored evaluation of the version on ``split`` (by its ``created``), if any."""
    pattern = re.compile(re.escape(f"{derived_folder(name, number)}/evaluations/") +
                         rf"[^/]+-{re.escape(split)}/{re.escape(EVALUATION_FILE)}")  # fmt: skip
    found = []
    for path in list_paths(session, project, MODELS_RESOURCE):
        if pattern.fullmatch(path):
            record = parse_json(read_text(session, project, MODELS_RESOURCE, path),
                                f"{MODELS_RESOURCE}/{path}")  # fmt: skip
            if isinstance(record, dict) and record.get("split") == split:
                found.append(record)
    return max(found, key=lambda r: str(r.get("created", ""))) if found else None


def dice_summary(record: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's mean Dice per label (by name) and over its labels, with its source."""
    mean, dataset = record["mean"], record["dataset"]
    return {"dataset": f"{dataset['name']}:{dataset['version']}", "split": record["split"],
            "cases": len(record["cases"]), "created": record.get("created"),
            "dice": {name: mean[value]["dice"] for value, name in record["labels"].items()},
            "mean_dice": mean["all"]["dice"]}  # fmt: skip
