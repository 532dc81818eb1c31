"""Promotion: a finished run's best weights become a new model folder with its lineage.

The new folder holds the run's bundle snapshot as published (no file edited), the best weights
as ``models/model.pt``, the label map and a card naming the parent model, the run, the dataset
version and the metrics. Bundle overrides the weights need at inference (the config's free-form
overrides of ids that ``inference.json`` has, e.g. the number of output channels) go on the card.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from xnat_ml.errors import XnatMlError
from xnat_ml.layout import LABELMAP_FILE
from xnat_ml.training.bundle import INFERENCE_CONFIG, METADATA, WEIGHTS, has_id, read_json_file
from xnat_ml.training.model import (
    CARD_FILE,
    ModelCard,
    Output,
    Ref,
    channel_names,
    copy_bundle,
    read_card,
    validate_model,
    write_card,
)
from xnat_ml.training.run_checks import check_completed, check_record
from xnat_ml.training.run_folder import BEST_FILE, BUNDLE_DIR, CONFIG_FILE, RunFolder


def promote(
    run_dir: str | Path,
    model_dir: str | Path,
    name: str,
    version: str,
    *,
    task: str | None = None,
) -> ModelCard:
    """Make ``model_dir`` (which must not exist) from a completed run; return its card.
    Refused with one line when the run folder is not what its job wrote (run_checks.py)."""
    run, model_dir = RunFolder(Path(run_dir)), Path(model_dir)
    check_record(run)  # config and bundle as prepared
    status = check_completed(run)  # the weights the status and latest.pt name
    if model_dir.exists():
        raise XnatMlError(f"model {model_dir}: already exists")
    record, config = run.record(), read_json_file(run.file(CONFIG_FILE), f"run {run.path}")
    bundle = run.file(BUNDLE_DIR)
    meta = read_json_file(bundle / METADATA, f"bundle {bundle}")
    parent = read_card(bundle) if (bundle / CARD_FILE).exists() else None
    inference = read_json_file(bundle / INFERENCE_CONFIG, f"bundle {bundle}")
    overrides = dict(parent.overrides) if parent else {}
    overrides.update({k: v for k, v in config.get("overrides", {}).items() if has_id(inference, k)})
    labels = parent.labels if parent else channel_names(meta, "outputs", "pred")
    best = status.get("best_metric")
    metrics = {status["metric_name"]: best} if best is not None else {}
    card = ModelCard(
        name=name,
        version=version,
        task=task or (parent.task if parent else str(meta.get("task", ""))),
        labels=labels or {0: "background", 1: "foreground"},
        input_channels=(parent.input_channels if parent else
                        list(channel_names(meta, "inputs", "image").values()) or ["image"]),
        spacing=parent.spacing if parent else None,
        parent=Ref(record["model"]["name"], record["model"]["version"]),
        run=run.run_id,
        dataset=Ref(record["dataset"]["name"], record["dataset"]["version"]),
        metrics=metrics,
        overrides=overrides,
        output=parent.output if parent else Output(),
    )  # fmt: skip
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        target = staging / "model"
        copy_bundle(bundle, target)
        (target / WEIGHTS).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.file(BEST_FILE), target / WEIGHTS)
        if not (target / LABELMAP_FILE).exists():
            (target / LABELMAP_FILE).write_text(
                "".join(f"{n}={v}\n" for v, n in sorted(card.labels.items()) if v != 0)
            )
        write_card(target, card)
        validate_model(target)
        target.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return card
