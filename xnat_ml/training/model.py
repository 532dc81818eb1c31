"""Model folders: a bundle as published, its label map and a model card (``model.json``).

The card says what the weights are for (task, labels, input channels in order, spacing) and
where they came from (parent model, run, dataset version, metrics), so a promoted model can be
traced back to the data and the run that made it.
"""

from __future__ import annotations

import json
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
LABELS, REGIONS = "labels", "regions"


@dataclass(frozen=True)
class Output:
    """What the bundle's post-processed prediction is: ``labels`` (one channel of label values,
    0 background) or ``regions`` (one binary channel each, which may overlap, e.g. BraTS TC/WT/ET).
    Regions become one exclusive label volume by ``paint``: ``(channel, value)`` pairs painted in
    order, so a later pair wins where regions overlap."""

    kind: str = LABELS
    paint: tuple[tuple[int, int], ...] = ()

    def to_json(self) -> dict[str, Any]:
        if self.kind == LABELS:
            return {"kind": LABELS}
        return {"kind": self.kind, "paint": [list(pair) for pair in self.paint]}

    @classmethod
    def read(cls, fields: Fields | None) -> Output:
        """The card's ``output`` (absent in older cards: labels); a region kind needs its rule."""
        if fields is None:
            return cls()
        fields.only(("kind", "paint"))
        kind = fields.get("kind", str, required=True)
        if kind not in (LABELS, REGIONS):
            raise XnatMlError(f"{fields.field('kind')}: expected '{LABELS}' or '{REGIONS}'")
        paint = fields.get("paint", list, default=[])
        if kind == LABELS:
            if paint:
                raise XnatMlError(f"{fields.field('paint')}: only a '{REGIONS}' output is painted")
            return cls()
        if not paint:
            raise XnatMlError(
                f"{fields.field('paint')}: a '{REGIONS}' output needs its paint rule, "
                "[[channel, value], ...] painted in order (BraTS: [[1, 2], [0, 1], [2, 4]])"
            )
        pairs = []
        for pair in paint:
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(type(n) is int and n >= 0 for n in pair) and pair[1] > 0):
                raise XnatMlError(f"{fields.field('paint')}: {pair!r:.40} is not a "
                                  "[channel, value] pair (channel >= 0, value > 0)")  # fmt: skip
            pairs.append((pair[0], pair[1]))
        return cls(REGIONS, tuple(pairs))


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
    output: Output = field(default_factory=Output)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = {str(value): name for value, name in sorted(self.labels.items())}
        data["output"] = self.output.to_json()
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
    output = Output.read(fields.sub("output"))
    unnamed = sorted({value for _, value in output.paint} - set(labels))
    if unnamed:
        raise XnatMlError(f"{fields.field('output')}: paints values {unnamed} that labels "
                          "does not name")  # fmt: skip
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
        output=output,
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


def output_labels(meta: dict[str, Any], output: Output) -> dict[int, str]:
    """The labels a bundle's ``metadata.json`` implies for its output kind: a label model's
    output ``channel_def`` read as label values; a region model's painted values, each named
    after its channel (BraTS: 2 "WT", 1 "TC", 4 "ET"), never the channel indices."""
    names = channel_names(meta, "outputs", "pred")
    if output.kind == LABELS:
        return names
    return {0: "background"} | {value: names.get(channel, f"channel {channel}")
                                for channel, value in output.paint}  # fmt: skip


def parse_paint(text: str) -> Output:
    """A region output from ``CHANNEL=VALUE,...`` (``--paint 1=2,0=1,2=4``), painted in order."""
    pairs = [item.split("=", 1) for item in text.split(",")]
    if not all(len(p) == 2 and p[0].strip().isdigit() and p[1].strip().isdigit() for p in pairs):
        raise XnatMlError(f"--paint {text}: expected CHANNEL=VALUE,... (e.g. 1=2,0=1,2=4)")
    paint = [[int(c), int(v)] for c, v in pairs]
    return Output.read(Fields({"kind": REGIONS, "paint": paint}, f"--paint {text}"))


def sigmoid_outputs(inference: Any) -> bool:
    """Whether a bundle's ``inference.json`` post-processing applies a sigmoid (and no argmax):
    its output channels are regions, which need a paint rule before they can be labels."""
    text = json.dumps(inference.get("postprocessing", {}) if isinstance(inference, dict) else {})
    return '"sigmoid": true' in text and '"argmax": true' not in text


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
