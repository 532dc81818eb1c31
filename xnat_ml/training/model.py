"""Model folders: a bundle as published, its label map and a model card (``model.json``).

The card says what the weights are for (task, labels, input channels in order, spacing) and
where they came from (parent model, run, dataset version, metrics), so a promoted model can be
traced back to the data and the run that made it.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from xnat_ml.atomic import write_json_atomic
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import LabelMap, load_labelmap
from xnat_ml.layout import LABELMAP_FILE
from xnat_ml.training.bundle import WEIGHTS, read_json_file, validate_bundle
from xnat_ml.training.digests import UNCOVERED
from xnat_ml.training.fields import Fields
from xnat_ml.training.literals import check_overrides

CARD_FILE = "model.json"
CARD_FORMAT = "xnat-ml-model-card"


@dataclass(frozen=True)
class Ref:
    """A named, versioned thing: a model or a dataset."""

    name: str
    version: str

    @classmethod
    def read(cls, fields: Fields | None) -> Ref | None:
        if fields is None:
            return None
        fields.only(("name", "version"))
        return cls(fields.get("name", str, required=True), fields.get("version", str, default=""))


@dataclass
class ModelCard:
    """What ``model.json`` holds; ``overrides`` are bundle ids the weights need (e.g. the
    number of output channels) and apply to ``inference.json`` as well as ``train.json``."""

    name: str
    version: str
    task: str
    labels: dict[int, str]
    input_channels: list[str]
    spacing: list[float] | None = None
    parent: Ref | None = None
    run: str | None = None
    dataset: Ref | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {str(value): name for value, name in sorted(self.labels.items())}
        return {"format": CARD_FORMAT, **data}


def parse_card(value: Any, source: str) -> ModelCard:
    """A model card from parsed JSON; errors name the field."""
    fields = Fields(value, source)
    fields.only(["format", *ModelCard.__dataclass_fields__])
    if fields.get("format", str, required=True) != CARD_FORMAT:
        raise XnatMlError(f"{fields.field('format')}: expected '{CARD_FORMAT}'")
    labels: dict[int, str] = {}
    for key, name in fields.get("labels", dict, required=True).items():
        if not key.isdigit() or not isinstance(name, str) or not name:
            raise XnatMlError(f"{fields.field('labels')}: '{key}' must map a value to a name")
        labels[int(key)] = name
    channels = fields.get("input_channels", list, required=True)
    if not channels or not all(isinstance(c, str) and c for c in channels):
        raise XnatMlError(f"{fields.field('input_channels')}: expected a list of channel names")
    spacing = fields.get("spacing", list)
    if spacing is not None and not all(
        isinstance(s, int | float) and not isinstance(s, bool) and s > 0 for s in spacing
    ):
        raise XnatMlError(f"{fields.field('spacing')}: expected positive numbers (mm)")
    overrides = fields.get("overrides", dict, default={})
    check_overrides(overrides, fields.field("overrides"))
    metrics = fields.get("metrics", dict, default={})
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in metrics.values()):
        raise XnatMlError(f"{fields.field('metrics')}: values must be numbers")
    return ModelCard(
        name=fields.get("name", str, required=True),
        version=fields.get("version", str, required=True),
        task=fields.get("task", str, required=True),
        labels=labels,
        input_channels=channels,
        spacing=[float(s) for s in spacing] if spacing is not None else None,
        parent=Ref.read(fields.sub("parent")),
        run=fields.get("run", str),
        dataset=Ref.read(fields.sub("dataset")),
        metrics={k: float(v) for k, v in metrics.items()},
        overrides=overrides,
        created=fields.get("created", str, default=""),
    )


def read_card(model_dir: str | Path, label: str | None = None) -> ModelCard:
    """The card in ``model_dir``; ``label`` (``model tissues v1``) names it in errors."""
    path = Path(model_dir) / CARD_FILE
    what = label or f"model {model_dir}"
    shown = CARD_FILE if label else None
    return parse_card(read_json_file(path, what, shown), f"{what}: {CARD_FILE}" if label
                      else str(path))  # fmt: skip


def write_card(model_dir: str | Path, card: ModelCard) -> Path:
    return write_json_atomic(Path(model_dir) / CARD_FILE, card.to_json())


def validate_model(model_dir: str | Path, label: str | None = None) -> tuple[ModelCard, LabelMap]:
    """Check a model folder: bundle, card and label map, and that card and label map agree;
    ``label`` (``model tissues v1``) names it in errors instead of its folder."""
    model_dir = Path(model_dir)
    what = label or f"model {model_dir}"
    validate_bundle(model_dir, label=label)
    card = read_card(model_dir, label)
    labelmap = load_labelmap(model_dir / LABELMAP_FILE)
    in_map = {label.value: label.name for label in labelmap.labels}
    named = {value: name for value, name in card.labels.items() if value != 0}
    if named != in_map:
        raise XnatMlError(
            f"{what}: {CARD_FILE} labels {named} differ from {LABELMAP_FILE} {in_map}"
        )
    return card, labelmap


def channel_names(meta: dict[str, Any], side: str, key: str) -> dict[int, str]:
    """A bundle's ``metadata.json`` channel names, e.g. ``("outputs", "pred")`` -> its labels."""
    fmt = meta.get("network_data_format", {}).get(side, {}).get(key, {})
    return {int(k): str(v) for k, v in fmt.get("channel_def", {}).items() if str(k).isdigit()}


def weights_path(model_dir: str | Path, label: str | None = None) -> Path:
    """The model's trained weights; a model without them cannot be fine-tuned or promoted from."""
    path = Path(model_dir) / WEIGHTS
    if not path.is_file():
        raise XnatMlError(f"{label or f'model {model_dir}'}: has no weights ({WEIGHTS})")
    return path


def copy_bundle(source: Path, target: Path) -> None:
    """Copy a model folder without its weights (configs, docs, label map, card) and without a
    version's own ``digests.json``/``claim.json``."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("models", "__pycache__",
                                                                  *UNCOVERED))  # fmt: skip
