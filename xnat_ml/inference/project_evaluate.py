"""`xnat-ml model evaluate` and `model export` in a project: a model version's scores on a
dataset version's split, and its TorchScript, stored BESIDE the version (model versions are
write-once) in ``ML_MODELS/<name>/v<N>.derived/``:

- ``evaluations/<dataset>-v<M>-<split>/`` holds ``metrics.json``, ``metrics.md``,
  ``dice.png``, ``overlays/<case>.png`` (an evaluation run again replaces its own folder's files);
- ``export/`` holds ``model.ts`` and ``export.json`` (the check's input shape and largest
  output difference).

The model version is pulled digest-checked (``pull_model``) before its bundle is parsed, and
every file of a result goes up in one atomic upload, so a reader sees all of it or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.atomic import write_json_atomic
from xnat_ml.datasets.datalist import LISTS
from xnat_ml.datasets.fetch import fetch_dataset
from xnat_ml.datasets.versions import DATALIST_FILE, find_version, read_json
from xnat_ml.errors import XnatMlError
from xnat_ml.inference.evaluation import Case, evaluate, write_evaluation
from xnat_ml.inference.export import TORCHSCRIPT_FILE, export_torchscript
from xnat_ml.layout import MODELS_RESOURCE
from xnat_ml.training.derived import derived_folder, evaluation_folder
from xnat_ml.training.limits import parse_json
from xnat_ml.training.project_files import upload_tree
from xnat_ml.training.project_models import find_model, pull_model, read_model_card
from xnat_ml.training.project_train import check_data_fits

EXPORT_RECORD = "export.json"
DERIVED_CONTENT = "ML_MODEL_DERIVED"


@dataclass(frozen=True)
class Stored:
    """What an evaluation or export stored: its folder in ML_MODELS and its main document."""

    folder: str
    record: dict[str, Any]


def evaluate_in_project(
    session: XNATSession, project: str, model: tuple[str, int | None],
    dataset: tuple[str, int | None], split: str = "testing", *, device: str = "cpu",
    cache: Path | None = None,
) -> Stored:
    """Score version ``model`` (name, number or None for the latest) on ``split`` of dataset
    version ``dataset`` and store the evaluation beside the model version. Everything is
    resolved and checked (versions exist, split not empty, labels the model's) before the
    model is pulled or any image fetched."""
    if split not in LISTS:
        raise XnatMlError(f"split {split!r}: not one of {', '.join(LISTS)}")
    name, number = model[0], find_model(session, project, *model)
    version = find_version(session, project, *dataset)
    label = f"model {name} v{number}"
    data = f"dataset {version.name} v{version.number}"
    card = read_model_card(session, project, name, number)
    listing = read_json(session, project, version, DATALIST_FILE)
    if not listing.get(split):
        raise XnatMlError(f"{data}: its {split} split is empty; nothing to evaluate")
    check_data_fits(listing, card, data, label)
    labels = {int(v): n for v, n in (listing.get("labels") or {}).items() if str(v).isdigit()}
    labels = {v: card.labels[v] for v in labels if v} or {v: n for v, n in card.labels.items() if v}
    folder = evaluation_folder(name, number, version.name, version.number, split)
    with scratch.temporary("evaluate-") as tmp:
        model_dir = pull_model(session, project, name, number, Path(tmp) / "model")
        fetched = fetch_dataset(session, project, version.name, Path(tmp) / "data",
                                number=version.number, cache=cache, progress=False)  # fmt: skip
        cases = _cases(parse_json(fetched.datalist.read_text(), data), split, fetched.datalist)
        overlays: dict[str, bytes] = {}
        record = {
            "model": {"name": name, "version": str(number)},
            "dataset": {"name": version.name, "version": str(version.number)},
            "split": split, "device": device,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            **evaluate(model_dir, cases, labels, device, overlays),
        }  # fmt: skip
        files = write_evaluation(record, Path(tmp) / "out", overlays)
        upload_tree(session, project, MODELS_RESOURCE,
                    {f"{folder}/{f}": path for f, path in files.items()},
                    DERIVED_CONTENT)  # fmt: skip
    return Stored(folder, record)


def _cases(listing: dict[str, Any], split: str, datalist: Path) -> list[Case]:
    """The split's cases with local paths (relative to the fetched datalist's folder)."""
    root = datalist.parent
    cases = []
    for i, item in enumerate(listing[split]):
        images = item["image"] if isinstance(item["image"], list) else [item["image"]]
        cases.append(Case(str(item.get("session") or item.get("subject") or f"case{i}"),
                          tuple(root / p for p in images), root / item["label"]))  # fmt: skip
    return cases


def export_in_project(
    session: XNATSession, project: str, model: tuple[str, int | None], *, device: str = "cpu",
) -> Stored:
    """TorchScript of version ``model``'s network, checked on a sample input and stored with
    its check's record in ``<name>/v<N>.derived/export/``."""
    name, number = model[0], find_model(session, project, *model)
    folder = f"{derived_folder(name, number)}/export"
    with scratch.temporary("export-") as tmp:
        model_dir = pull_model(session, project, name, number, Path(tmp) / "model")
        exported = export_torchscript(model_dir, Path(tmp) / "out" / TORCHSCRIPT_FILE,
                                      device=device)  # fmt: skip
        record = {"model": {"name": name, "version": str(number)},
                  "file": TORCHSCRIPT_FILE, "input_shape": list(exported.input_shape),
                  "max_abs_difference": exported.max_abs_difference, "device": device,
                  "created": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        written = write_json_atomic(Path(tmp) / "out" / EXPORT_RECORD, record)
        upload_tree(session, project, MODELS_RESOURCE,
                    {f"{folder}/{TORCHSCRIPT_FILE}": exported.path,
                     f"{folder}/{EXPORT_RECORD}": written}, DERIVED_CONTENT)  # fmt: skip
    return Stored(folder, record)
