"""MONAI bundles as published: check a bundle folder and open its training workflow.

A bundle is used exactly as its authors wrote it; xnat-ml only binds data, folders, length and
device through the bundle's standard ids (MONAI's ``TrainProperties``/``InferProperties``) and
typed overrides, so a Model Zoo bundle installs and fine-tunes without an edit to its files.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from xnat_ml.errors import XnatMlError
from xnat_ml.training.limits import parse_json

CONFIGS = "configs"
METADATA = f"{CONFIGS}/metadata.json"
TRAIN_CONFIG = f"{CONFIGS}/train.json"
INFERENCE_CONFIG = f"{CONFIGS}/inference.json"
WEIGHTS = "models/model.pt"

# MONAI requires these for a train/infer workflow; xnat-ml also binds the data and the weights
# through the ids after them, so a bundle without them cannot be trained here.
_META_IDS = ("version", "monai_version", "pytorch_version", "numpy_version")
_TRAIN_EXTRA_IDS = ("network_def", "train#dataset#data", "validate#evaluator",
                    "validate#dataset#data")  # fmt: skip
_INFER_EXTRA_IDS = ("network_def",)


def _required_ids(properties: Mapping[str, Mapping[str, Any]], extra: Iterable[str]) -> list[str]:
    ids = [p["id"].replace("::", "#") for p in properties.values() if p.get("required")]
    return ids + [i for i in extra if i not in ids]


def train_required_ids() -> list[str]:
    from monai.bundle.properties import TrainProperties

    return _required_ids(TrainProperties, _TRAIN_EXTRA_IDS)


def infer_required_ids() -> list[str]:
    from monai.bundle.properties import InferProperties

    return _required_ids(InferProperties, _INFER_EXTRA_IDS)


def read_json_file(path: Path, what: str, shown: str | None = None) -> Any:
    """Parse a JSON file within the caps on JSON (``limits.parse_json``); a missing or broken
    one is a one-line error naming it (as ``shown``: a temporary folder means nothing to a user)."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise XnatMlError(f"{what}: {shown} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise XnatMlError(f"{what}: cannot read {shown}: {exc}") from None
    return parse_json(text, f"{what}: {shown}")


def has_id(config: Any, config_id: str) -> bool:
    """Whether a parsed config holds ``config_id`` (``a#b#0`` walks dicts and lists)."""
    node = config
    for key in config_id.replace("::", "#").split("#"):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def _check_ids(what: str, name: str, config: Any, ids: Iterable[str]) -> None:
    if not isinstance(config, dict):
        raise XnatMlError(f"{what}: {name} must hold a JSON object")
    for config_id in ids:
        if not has_id(config, config_id):
            raise XnatMlError(f"{what}: {name} lacks the required id '{config_id}'")


def validate_bundle(
    bundle_dir: str | Path, *, need_inference: bool = True, label: str | None = None
) -> dict[str, Any]:
    """Check a bundle folder as published; return its metadata.

    A broken JSON config is one line naming the file, a missing required id one line naming it;
    ``label`` (``model tissues v1``) names the bundle instead of its (temporary) folder.
    """
    bundle_dir = Path(bundle_dir)
    what = label or f"bundle {bundle_dir}"
    if not bundle_dir.is_dir():
        raise XnatMlError(f"{what}: no such folder")

    def read(name: str) -> Any:
        return read_json_file(bundle_dir / name, what, name if label else None)

    meta = read(METADATA)
    _check_ids(what, METADATA, meta, _META_IDS)
    _check_ids(what, TRAIN_CONFIG, read(TRAIN_CONFIG), train_required_ids())
    if need_inference or (bundle_dir / INFERENCE_CONFIG).exists():
        _check_ids(what, INFERENCE_CONFIG, read(INFERENCE_CONFIG), infer_required_ids())
    return meta


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in chunks (checkpoints can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_digests(bundle_dir: str | Path) -> dict[str, str]:
    """SHA-256 of every file under the bundle folder, by relative path (proves it is unedited)."""
    root = Path(bundle_dir)
    return {
        path.relative_to(root).as_posix(): file_sha256(path)
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def open_train_workflow(bundle_dir: Path, overrides: Mapping[str, Any]) -> Any:
    """The bundle's own ``ConfigWorkflow`` for training, with typed overrides, not yet initialised.

    The bundle's ``logging.conf`` is not applied: it would reconfigure the whole process's
    logging (and disable the run's log file); the run sets up logging itself.
    """
    from monai.bundle import ConfigWorkflow

    validate_bundle(bundle_dir, need_inference=False)
    logging.getLogger("monai.bundle.workflows").setLevel(logging.ERROR)  # "skipping logging"
    workflow = ConfigWorkflow(
        config_file=str(bundle_dir / TRAIN_CONFIG),
        meta_file=str(bundle_dir / METADATA),
        logging_file=False,
        workflow_type="train",
    )
    for config_id, value in overrides.items():
        parent = config_id.replace("::", "#").rpartition("#")[0]
        if parent and parent not in workflow.parser:
            raise XnatMlError(
                f"bundle {bundle_dir}: override '{config_id}' has no parent id '{parent}' in "
                f"{TRAIN_CONFIG}"
            )
        workflow.parser[config_id] = value
    return workflow
