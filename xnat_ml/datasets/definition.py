"""Dataset definitions: the XNAT datasets plugin's JSON shape, read as is, plus our additions.

    {"criteria": [{"resolver": "TaggedResourceMap", "payload": {
        "Images": {"tag": "image", "SeriesDescription": ["T1%"], "ResourceLabel": ["NIFTI"]},
        "Labels": {"tag": "label", "Source": "roiCollection", "CollectionType": ["SEG"]}}}],
     "split": {"training": 70, "validation": 20, "testing": 10, "seed": 0}}

A payload entry's tag is its ``tag`` value, else its name with the first letter lowered (as the
plugin does). The tag ``label`` is the label map; every other tag is an image channel, ordered by
the top-level ``channels`` list when there is more than one. docs/datasets.md has every key.
Parsing is strict: an unknown key, a wrong type or a bad pattern is an error naming its place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, get_args

from xnat_ml.bounded_json import load_json
from xnat_ml.datasets.patterns import Pattern, compile_pattern
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import Origin
from xnat_ml.imaging.labelmap import LabelMap, parse_json_labelmap
from xnat_ml.layout import LABELMAP_FILE, LABELMAP_RESOURCE, MODELS_RESOURCE

RESOLVER = "TaggedResourceMap"
LABEL_TAG = "label"
SOURCES = ("scan", "roiCollection")
SPLITS = ("training", "validation", "testing")
DEFAULT_LABELMAP = f"{MODELS_RESOURCE}/{LABELMAP_FILE}"
DEFAULT_SPLIT = {"training": 70, "validation": 20, "testing": 10, "seed": 0}
ORIGINS: tuple[str, ...] = get_args(Origin)  # who made an ROI collection: human, ai, mixed
PREFERENCES = ("human", "ai")

MAX_DEFINITION_BYTES = 1 << 20
MAX_TAGS = 32
MAX_VALUES = 100  # patterns of one key
MAX_PATTERNS = 256  # patterns of the whole definition: each may be tried on every value
MAX_FOLDS = 100
MAX_TEXT = 1024  # ids, labels, descriptions, paths

# Payload keys holding patterns, and the attribute each fills.
_PATTERN_KEYS = {
    "SeriesDescription": "series",
    "ResourceLabel": "resource_label",
    "ResourceFormat": "resource_format",
    "ResourceContent": "resource_content",
    "CollectionType": "collection_type",
    "CollectionName": "collection_name",
    "FileName": "file_name",
}
_ROI_ONLY = ("CollectionType", "CollectionName", "Origin", "Prefer")
_TOP_KEYS = (
    "id",
    "project",
    "label",
    "description",
    "criteria",  # the plugin's own
    "channels",
    "subjects",
    "sessions",
    "split",
    "labelmap",
    "requiredLabels",
)


class DefinitionError(XnatMlError):
    """A dataset definition that cannot be used; the message names the field and the value."""


@dataclass(frozen=True)
class TagCriteria:
    """How one tag finds its file in a session. Empty pattern tuples mean "any"."""

    name: str  # the payload entry's name
    tag: str
    source: str  # "scan" or "roiCollection"
    series: tuple[Pattern, ...] = ()
    resource_label: tuple[Pattern, ...] = ()
    resource_format: tuple[Pattern, ...] = ()
    resource_content: tuple[Pattern, ...] = ()
    collection_type: tuple[Pattern, ...] = ()
    collection_name: tuple[Pattern, ...] = ()
    file_name: tuple[Pattern, ...] = ()
    origin: tuple[str, ...] = ()  # roiCollection only: take collections of these origins
    prefer: str = ""  # roiCollection only: of several on one scan, keep those of this origin


@dataclass(frozen=True)
class SplitSpec:
    """Target share of subjects per split, in order; with ``folds`` the training shares are
    named ``fold0``..``foldK-1`` and ``testing`` (if any) is held out."""

    shares: tuple[tuple[str, Fraction], ...]
    seed: int = 0
    folds: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed}
        if self.folds:
            out["folds"] = self.folds
        out["shares"] = {name: str(share) for name, share in self.shares}
        return out


@dataclass(frozen=True)
class Definition:
    images: tuple[TagCriteria, ...]  # in channel order
    label: TagCriteria | None
    split: SplitSpec
    labelmap: str | LabelMap  # a path under the project's resources, or an inline map
    id: str = ""
    project: str = ""
    title: str = ""  # the plugin's "label" field
    description: str = ""
    subjects: tuple[Pattern, ...] = ()
    sessions: tuple[Pattern, ...] = ()
    required_labels: tuple[str | int, ...] = ()

    @property
    def tags(self) -> tuple[TagCriteria, ...]:
        return self.images + ((self.label,) if self.label else ())


def parse_definition(data: str | bytes | dict[str, Any], source: str = "definition") -> Definition:
    """Read a definition from JSON text or an already decoded object."""
    where = f"dataset definition {source}"
    doc = _decode(data, where) if isinstance(data, str | bytes) else data
    if not isinstance(doc, dict):
        raise DefinitionError(f"{where}: expected a JSON object, got {_kind(doc)}")
    _no_unknown(doc, _TOP_KEYS, where)
    meta = {k: _text(doc.get(k, ""), f"{where}: {k}") for k in ("id", "project", "label")}
    description = _text(doc.get("description", ""), f"{where}: description")
    tags = _criteria(doc.get("criteria"), where)
    subjects = _patterns(doc.get("subjects", []), f"{where}: subjects", allow_empty=True)
    sessions = _patterns(doc.get("sessions", []), f"{where}: sessions", allow_empty=True)
    count = len(subjects) + len(sessions)
    count += sum(len(getattr(t, attr)) for t in tags for attr in _PATTERN_KEYS.values())
    if count > MAX_PATTERNS:
        raise DefinitionError(f"{where}: {count} patterns, more than {MAX_PATTERNS} in all")
    label = next((t for t in tags if t.tag == LABEL_TAG), None)
    images = _channels(doc.get("channels"), [t for t in tags if t is not label], where)
    return Definition(
        images=images,
        label=label,
        split=parse_split(doc.get("split", DEFAULT_SPLIT), f"{where}: split"),
        labelmap=_labelmap(doc.get("labelmap", DEFAULT_LABELMAP), f"{where}: labelmap"),
        id=meta["id"],
        project=meta["project"],
        title=meta["label"],
        description=description,
        subjects=subjects,
        sessions=sessions,
        required_labels=_required(doc.get("requiredLabels", []), f"{where}: requiredLabels"),
    )


def parse_split(spec: Any, where: str) -> SplitSpec:
    """``{"training": 70, "validation": 20, "testing": 10, "seed": 0}`` (weights, any scale;
    ``test`` is read as ``testing``) or ``{"folds": 5, "testing": 10, "seed": 0}`` (``testing``
    then a percentage held out before the folds)."""
    if not isinstance(spec, dict):
        raise DefinitionError(f"{where}: expected an object, got {_kind(spec)}")
    spec = dict(spec)
    if "test" in spec:
        if "testing" in spec:
            raise DefinitionError(f"{where}: give either test or testing, not both")
        spec["testing"] = spec.pop("test")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise DefinitionError(f"{where}.seed: {seed!r} is not an integer 0..2^63-1")
    if "folds" in spec:
        _no_unknown(spec, ("folds", "testing", "seed"), where)
        folds = spec["folds"]
        if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= MAX_FOLDS:
            raise DefinitionError(f"{where}.folds: {folds!r} is not an integer 2..{MAX_FOLDS}")
        testing = _weight(spec.get("testing", 0), f"{where}.testing")
        if testing >= 100:
            raise DefinitionError(f"{where}.testing: {spec['testing']!r} leaves no subject to fold")
        held = testing / 100
        shares = ((("testing", held),) if held else ()) + tuple(
            (f"fold{i}", (1 - held) / folds) for i in range(folds)
        )
        return SplitSpec(shares, seed, folds)
    _no_unknown(spec, (*SPLITS, "seed"), where)
    weights = {name: _weight(spec.get(name, 0), f"{where}.{name}") for name in SPLITS}
    total = sum(weights.values())
    if not total:
        raise DefinitionError(f"{where}: training, validation and testing are all 0")
    return SplitSpec(tuple((n, w / total) for n, w in weights.items() if w), seed)


def _decode(data: str | bytes, where: str) -> Any:
    return load_json(data, where, error=DefinitionError, max_bytes=MAX_DEFINITION_BYTES)


def _criteria(criteria: Any, where: str) -> list[TagCriteria]:
    if not isinstance(criteria, list) or not criteria:
        raise DefinitionError(f"{where}: criteria must be a non-empty list, got {_kind(criteria)}")
    tags: list[TagCriteria] = []
    for index, criterion in enumerate(criteria):
        here = f"{where}: criteria[{index}]"
        if not isinstance(criterion, dict):
            raise DefinitionError(f"{here}: expected an object, got {_kind(criterion)}")
        _no_unknown(criterion, ("resolver", "payload"), here)
        resolver = criterion.get("resolver", RESOLVER)
        if resolver != RESOLVER:
            raise DefinitionError(
                f"{here}.resolver: {resolver!r} is not supported (only {RESOLVER})"
            )
        payload = criterion.get("payload")
        if isinstance(payload, str):  # the plugin stores payloads as JSON strings
            payload = _decode(payload, f"{here}.payload")
        if not isinstance(payload, dict) or not payload:
            raise DefinitionError(
                f"{here}.payload: expected a non-empty object, got {_kind(payload)}"
            )
        for name, entry in payload.items():
            tag = _tag(name, entry, f"{here}.payload.{name}")
            if any(t.tag == tag.tag for t in tags):
                raise DefinitionError(f"{here}.payload.{name}: tag {tag.tag!r} is defined twice")
            tags.append(tag)
            if len(tags) > MAX_TAGS:
                raise DefinitionError(f"{where}: more than {MAX_TAGS} tags")
    return tags


def _tag(name: str, entry: Any, where: str) -> TagCriteria:
    if not isinstance(entry, dict):
        raise DefinitionError(f"{where}: expected an object, got {_kind(entry)}")
    _no_unknown(entry, ("tag", "Source", "Origin", "Prefer", *_PATTERN_KEYS), where)
    tag = entry.get("tag", name[:1].lower() + name[1:])
    if not isinstance(tag, str) or not tag.strip() or len(tag) > 64:
        raise DefinitionError(f"{where}.tag: {tag!r} is not a tag name (1..64 characters)")
    source = entry.get("Source", "scan")
    if source not in SOURCES:
        raise DefinitionError(f"{where}.Source: {source!r} is not one of {', '.join(SOURCES)}")
    if source == "scan":
        for key in _ROI_ONLY:
            if key in entry:
                raise DefinitionError(f"{where}.{key}: only applies with Source roiCollection")
    fields = {
        attr: _patterns(entry[key], f"{where}.{key}")
        for key, attr in _PATTERN_KEYS.items()
        if key in entry
    }
    if source == "roiCollection":
        fields.setdefault("resource_label", (compile_pattern(LABELMAP_RESOURCE, where),))
        fields.setdefault("file_name", (compile_pattern("labels.nii.gz", where),))
    else:
        fields.setdefault("file_name", (compile_pattern(r"/\.nii(\.gz)?$/i", where),))
    origin = _origins(entry["Origin"], f"{where}.Origin") if "Origin" in entry else ()
    prefer = entry.get("Prefer", "")
    if "Prefer" in entry and prefer not in PREFERENCES:
        raise DefinitionError(f"{where}.Prefer: {prefer!r} is not one of {', '.join(PREFERENCES)}")
    return TagCriteria(name=name, tag=tag, source=source, origin=origin, prefer=prefer, **fields)


def _origins(values: Any, where: str) -> tuple[str, ...]:
    """``"human"`` or a non-empty list of origins, each one of ORIGINS."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise DefinitionError(f"{where}: expected one of {', '.join(ORIGINS)} or a list of them")
    for value in values:
        if value not in ORIGINS:
            raise DefinitionError(f"{where}: {value!r} is not one of {', '.join(ORIGINS)}")
    return tuple(dict.fromkeys(values))


def _channels(channels: Any, images: list[TagCriteria], where: str) -> tuple[TagCriteria, ...]:
    if not images:
        raise DefinitionError(f"{where}: no image tag (every tag but {LABEL_TAG!r} is an image)")
    by_tag = {t.tag: t for t in images}
    if channels is None:
        if len(images) > 1:
            raise DefinitionError(
                f"{where}: channels must list the order of the image tags {sorted(by_tag)}"
            )
        return tuple(images)
    if (
        not isinstance(channels, list)
        or not all(isinstance(c, str) for c in channels)
        or sorted(channels) != sorted(by_tag)
    ):
        raise DefinitionError(
            f"{where}: channels {channels!r} must list each image tag once: {sorted(by_tag)}"
        )
    return tuple(by_tag[c] for c in channels)


def _patterns(values: Any, where: str, allow_empty: bool = False) -> tuple[Pattern, ...]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or (not values and not allow_empty):
        raise DefinitionError(f"{where}: expected a string or a non-empty list of strings")
    if len(values) > MAX_VALUES:
        raise DefinitionError(f"{where}: more than {MAX_VALUES} values")
    out = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise DefinitionError(f"{where}[{index}]: {value!r} is not a string")
        out.append(compile_pattern(value, f"{where}[{index}]"))
    return tuple(out)


def _labelmap(value: Any, where: str) -> str | LabelMap:
    if isinstance(value, dict):
        return parse_json_labelmap(json.dumps(value), "inline in the definition")
    if not isinstance(value, str):
        raise DefinitionError(f"{where}: expected a path or a label map object, got {_kind(value)}")
    parts = value.split("/")
    if len(value) > MAX_TEXT or len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        raise DefinitionError(
            f"{where}: {value!r} is not a RESOURCE/path inside the project's resources"
        )
    return value


def _required(values: Any, where: str) -> tuple[str | int, ...]:
    if not isinstance(values, list):
        raise DefinitionError(f"{where}: expected a list of label names or values")
    for index, value in enumerate(values):
        ok_int = isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 255
        if not ok_int and not (isinstance(value, str) and value.strip()):
            raise DefinitionError(f"{where}[{index}]: {value!r} is not a label name or value")
    return tuple(values)


def _weight(value: Any, where: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1e6:
        raise DefinitionError(f"{where}: {value!r} is not a number 0..1000000")
    return Fraction(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise DefinitionError(f"{where}: expected a string of at most {MAX_TEXT} characters")
    return value


def _no_unknown(obj: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise DefinitionError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )
