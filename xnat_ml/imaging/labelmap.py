"""Label maps: which ROI name becomes which voxel value in a composite label NIfTI.

Two file forms are read. XNAT ML's ``region2MaskValueMap.txt`` (``Label=Value`` a line) keeps
models trained for XNAT ML usable as they are; the JSON form adds what that file cannot say:
aliases (annotators spell the same organ many ways), display colours and explicit priorities for
overlapping ROIs. ``compose`` paints masks into one uint8 array and reports every decision it
made, because a silently dropped or overwritten ROI ruins a training set without anyone noticing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from nibabel.orientations import io_orientation, ornt_transform

from xnat_ml.bounded_json import load_json
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.series import Series, as_nifti, save_nifti
from xnat_ml.linear_regex import LinearRegex, RegexError, compile_linear

MAX_FILE_BYTES = 1 << 20  # a label map is a few lines; anything bigger is not one
MAX_NAME_CHARS = 256
GRID_TOL_MM = 1e-3  # NIfTI stores affines as float32: allow that much, never a real shift
JSON_FORMAT = "xnat-ml-labelmap"

OVERLAP_RULE = (
    "a voxel covered by several ROIs takes the value of the label with the highest priority; "
    "equal priorities go to the label listed first in the label map"
)

# Shown when a label map gives no colour: distinct, readable hues, cycled by value.
DEFAULT_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)

_REGEX_FORM = re.compile(r"^/(?P<body>.+)/(?P<flags>[a-z]*)$", re.DOTALL)


@dataclass(frozen=True)
class Label:
    """One label: the value it paints and every ROI name it claims."""

    name: str
    value: int
    aliases: tuple[str, ...] = ()
    patterns: tuple[LinearRegex, ...] = ()
    color: tuple[int, int, int] | None = None
    priority: int = 0
    order: int = 0  # position in the file; breaks priority ties

    @property
    def folded_names(self) -> set[str]:
        """Name and aliases as compared with ROI names (case and spacing ignored)."""
        return {_fold(n) for n in (self.name, *self.aliases)}

    @property
    def display_color(self) -> tuple[int, int, int]:
        return self.color or DEFAULT_COLORS[(self.value - 1) % len(DEFAULT_COLORS)]

    @property
    def rank(self) -> tuple[int, int]:
        """Sort key: a greater rank wins an overlap."""
        return (self.priority, -self.order)


@dataclass(frozen=True)
class LabelMap:
    """An ordered set of labels with unique names and values in 1..255 (0 is background)."""

    labels: tuple[Label, ...]
    source: str = "<label map>"
    _by_value: dict[int, Label] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_value", {lab.value: lab for lab in self.labels})

    def by_value(self, value: int) -> Label | None:
        return self._by_value.get(value)

    def match(self, roi_name: str) -> list[Label]:
        """Labels claiming ``roi_name``: an exact (case-insensitive) name or alias wins over
        patterns; more than one result means the name is ambiguous."""
        key = _fold(roi_name)
        exact = [lab for lab in self.labels if key in lab.folded_names]
        if exact:
            return exact
        text = roi_name.strip()
        return [lab for lab in self.labels if any(p.search(text) for p in lab.patterns)]

    def segments(self) -> dict[int, tuple[str, tuple[int, int, int]]]:
        """``{value: (name, rgb)}``, the form the SEG and RTSTRUCT writers take."""
        return {lab.value: (lab.name, lab.display_color) for lab in self.labels}

    def to_json(self) -> dict[str, Any]:
        """The JSON form of this map (patterns written back as ``/body/flags``)."""
        out = []
        for lab in self.labels:
            item: dict[str, Any] = {"name": lab.name, "value": lab.value}
            aliases = list(lab.aliases) + [_pattern_text(p) for p in lab.patterns]
            if aliases:
                item["aliases"] = aliases
            if lab.color:
                item["color"] = list(lab.color)
            if lab.priority:
                item["priority"] = lab.priority
            out.append(item)
        return {"format": JSON_FORMAT, "version": 1, "labels": out}


def load_labelmap(path: str | Path) -> LabelMap:
    """Read a label map, JSON (``.json`` or text starting with ``{``) or ``Label=Value`` text."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise XnatMlError(f"label map {path}: {size} bytes is too large for a label map")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise XnatMlError(f"label map {path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise XnatMlError(f"label map {path}: cannot be read ({exc.strerror})") from None
    if path.suffix.lower() == ".json":
        return parse_json_labelmap(text, str(path))
    return parse_labelmap(text, str(path))


def parse_labelmap(data: str | bytes, source: str = "<label map>") -> LabelMap:
    """Parse label map content fetched from anywhere: JSON if it starts with ``{``, else
    ``Label=Value`` text."""
    if len(data) > MAX_FILE_BYTES:
        raise XnatMlError(f"label map {source}: {len(data)} bytes is too large for a label map")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise XnatMlError(f"label map {source}: not UTF-8 text ({exc.reason})") from None
    if data.lstrip().startswith("{"):
        return parse_json_labelmap(data, source)
    return parse_text_labelmap(data, source)


def parse_text_labelmap(text: str, source: str = "<text>") -> LabelMap:
    """Parse XNAT ML's ``region2MaskValueMap.txt``: ``Label=Value`` a line; ``#`` starts a
    comment line; blank lines are skipped. Names match ROI names case-insensitively."""
    labels: list[Label] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"label map {source} line {lineno}"
        name, sep, value_text = line.rpartition("=")
        if not sep:
            raise XnatMlError(f"{where}: expected Label=Value, got {_show(line)}")
        label = Label(
            name=_check_name(name.strip(), where),
            value=_check_value(value_text.strip(), where),
            order=len(labels),
        )
        _check_unique(label, labels, where)
        labels.append(label)
    return _finish(labels, source)


def parse_json_labelmap(text: str, source: str = "<json>") -> LabelMap:
    """Parse the JSON form documented in docs/imaging-labelmaps.md."""
    doc = load_json(text, f"label map {source}", max_bytes=MAX_FILE_BYTES)
    if not isinstance(doc, dict) or not isinstance(doc.get("labels"), list):
        raise XnatMlError(f'label map {source}: expected an object with a "labels" list')
    if doc.get("format", JSON_FORMAT) != JSON_FORMAT or doc.get("version", 1) != 1:
        raise XnatMlError(
            f"label map {source}: unsupported format {doc.get('format')!r} "
            f'version {doc.get("version")!r} (expected "{JSON_FORMAT}" version 1)'
        )
    unknown = set(doc) - {"format", "version", "labels", "description"}
    if unknown:
        raise XnatMlError(f"label map {source}: unknown keys {sorted(unknown)}")
    labels: list[Label] = []
    for index, item in enumerate(doc["labels"]):
        where = f"label map {source} labels[{index}]"
        if not isinstance(item, dict):
            raise XnatMlError(f"{where}: expected an object, got {type(item).__name__}")
        unknown = set(item) - {"name", "value", "aliases", "color", "priority"}
        if unknown:
            raise XnatMlError(f"{where}: unknown keys {sorted(unknown)}")
        if not isinstance(item.get("name"), str):
            raise XnatMlError(f'{where}: "name" must be a string')
        aliases, patterns = _check_aliases(item.get("aliases", []), where)
        label = Label(
            name=_check_name(item["name"].strip(), where),
            value=_check_value(item.get("value"), where),
            aliases=aliases,
            patterns=patterns,
            color=_check_color(item.get("color"), where),
            priority=_check_priority(item.get("priority", 0), where),
            order=index,
        )
        _check_unique(label, labels, where)
        labels.append(label)
    return _finish(labels, source)


def compose(
    masks: Mapping[str, np.ndarray],
    labelmap: LabelMap,
    shape: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Paint ROI masks into one uint8 label array and report what went where.

    Overlaps follow ``OVERLAP_RULE``; each overlapping ROI pair is counted in the report, as are
    ROIs no label claims (or several claim) and labels no ROI filled. ``shape`` is only needed
    when ``masks`` is empty.
    """
    shapes = {np.shape(m) for m in masks.values()}
    if len(shapes) > 1:
        raise XnatMlError(f"ROI masks: shapes differ ({sorted(shapes)}); all must share one grid")
    if not shapes and shape is None:
        raise XnatMlError("ROI masks: none given and no grid shape to compose into")
    grid = shapes.pop() if shapes else tuple(shape)  # type: ignore[arg-type]
    # Work on flat views in the masks' own memory order: masks built in Fortran order (as NIfTI
    # data is) would otherwise be copied or strided through for every operation.
    fortran = bool(masks) and all(
        np.asarray(m).flags.f_contiguous and not np.asarray(m).flags.c_contiguous
        for m in masks.values()
    )
    order = "F" if fortran or not masks else "C"
    labels = np.zeros(grid, dtype=np.uint8, order=order)
    flat_labels = labels.reshape(-1, order=order)  # a view: writes land in `labels`

    mapped: list[tuple[str, Label, np.ndarray]] = []
    unmapped: list[dict[str, Any]] = []
    for roi, mask in masks.items():
        flat = np.asarray(mask).reshape(-1, order=order).astype(bool, copy=False)
        hits = labelmap.match(roi)
        if len(hits) == 1:
            mapped.append((roi, hits[0], flat))
            continue
        reason = (
            "no label matches"
            if not hits
            else "matches several labels: " + ", ".join(lab.name for lab in hits)
        )
        unmapped.append({"roi": roi, "voxels": int(np.count_nonzero(flat)), "reason": reason})

    for _, label, flat in sorted(mapped, key=lambda m: m[1].rank):
        np.copyto(flat_labels, label.value, where=flat)

    per_label: dict[int, dict[str, Any]] = {}
    for roi, label, mask in mapped:
        entry = per_label.setdefault(
            label.value,
            {
                "value": label.value,
                "name": label.name,
                "color": list(label.display_color),
                "priority": label.priority,
                "rois": [],
            },
        )
        entry["rois"].append({"roi": roi, "voxels": int(np.count_nonzero(mask))})
    counts = np.bincount(flat_labels, minlength=256)
    for value, entry in per_label.items():
        entry["voxels"] = int(counts[value])

    report: dict[str, Any] = {
        "labelmap": labelmap.source,
        "overlap_rule": OVERLAP_RULE,
        "shape": list(grid),
        "labels": [per_label[v] for v in sorted(per_label)],
        "unmapped_rois": unmapped,
        "labels_without_roi": [
            {"value": lab.value, "name": lab.name}
            for lab in labelmap.labels
            if lab.value not in per_label
        ],
        "overlaps": _overlaps(mapped),
    }
    # Returned Fortran-ordered, NIfTI's own layout (as Series arrays are): nibabel then writes
    # it without a transposing copy, ~5x faster for 512x512x200. Masks in C order cost one
    # uint8 copy here rather than a copy of every mask.
    return np.asfortranarray(labels), report


def _overlaps(mapped: list[tuple[str, Label, np.ndarray]]) -> list[dict[str, Any]]:
    """Voxel counts of every overlapping ROI pair (masks given flat), counted on the voxels
    that two or more ROIs cover, usually a small fraction of the grid."""
    if len(mapped) < 2:
        return []
    cover = np.zeros(mapped[0][2].shape, dtype=np.uint16)
    for _, _, flat in mapped:
        np.add(cover, flat, out=cover, casting="unsafe")
    where = np.flatnonzero(cover >= 2)
    if where.size == 0:
        return []
    subsets = [flat[where] for _, _, flat in mapped]
    out = []
    for a in range(len(mapped)):
        for b in range(a + 1, len(mapped)):
            voxels = int(np.count_nonzero(subsets[a] & subsets[b]))
            if not voxels:
                continue
            (roi_a, lab_a, _), (roi_b, lab_b, _) = mapped[a], mapped[b]
            if lab_a.value == lab_b.value:
                winner = None
            else:
                winner = roi_a if lab_a.rank > lab_b.rank else roi_b
            out.append(
                {
                    "rois": [roi_a, roi_b],
                    "values": [lab_a.value, lab_b.value],
                    "voxels": voxels,
                    "winner": winner,
                }
            )
    return out


def _fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def _show(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _check_name(name: str, where: str) -> str:
    if not name:
        raise XnatMlError(f"{where}: empty label name")
    if len(name) > MAX_NAME_CHARS:
        raise XnatMlError(f"{where}: label name longer than {MAX_NAME_CHARS} characters")
    if any(ord(ch) < 32 for ch in name):
        raise XnatMlError(f"{where}: label name {_show(name)} contains control characters")
    return name


def _check_value(value: Any, where: str) -> int:
    if isinstance(value, str):
        if not re.fullmatch(r"[+-]?\d{1,6}", value):
            raise XnatMlError(f"{where}: value {_show(value)} is not an integer")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise XnatMlError(f"{where}: value {value!r} is not an integer")
    if not 1 <= value <= 255:
        raise XnatMlError(f"{where}: value {value} outside 1..255 (0 is the implicit background)")
    return value


def _check_color(color: Any, where: str) -> tuple[int, int, int] | None:
    if color is None:
        return None
    if (
        not isinstance(color, list)
        or len(color) != 3
        or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)
    ):
        raise XnatMlError(f'{where}: "color" must be [r, g, b] with integers 0..255')
    return (color[0], color[1], color[2])


def _check_priority(priority: Any, where: str) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 10**6:
        raise XnatMlError(f'{where}: "priority" must be an integer between -1000000 and 1000000')
    return priority


def _check_aliases(aliases: Any, where: str) -> tuple[tuple[str, ...], tuple[LinearRegex, ...]]:
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise XnatMlError(f'{where}: "aliases" must be a list of strings')
    names: list[str] = []
    patterns: list[LinearRegex] = []
    for alias in aliases:
        form = _REGEX_FORM.match(alias.strip())
        if not form:
            names.append(_check_name(alias.strip(), where))
            continue
        if set(form["flags"]) - {"i"}:
            raise XnatMlError(f"{where}: alias {_show(alias)} has flags other than i")
        if len(alias) > MAX_NAME_CHARS:
            raise XnatMlError(f"{where}: alias pattern longer than {MAX_NAME_CHARS} characters")
        try:
            patterns.append(compile_linear(form["body"], ignore_case=bool(form["flags"])))
        except RegexError as exc:
            raise XnatMlError(
                f"{where}: alias {_show(alias)} is not a valid regex ({exc})"
            ) from None
    return tuple(names), tuple(patterns)


def _check_unique(label: Label, earlier: list[Label], where: str) -> None:
    for other in earlier:
        if other.value == label.value:
            raise XnatMlError(f"{where}: value {label.value} already used by label {other.name!r}")
        clash = label.folded_names & other.folded_names
        if clash:
            raise XnatMlError(
                f"{where}: name {sorted(clash)[0]!r} already used by label {other.name!r}"
            )


def _finish(labels: list[Label], source: str) -> LabelMap:
    if not labels:
        raise XnatMlError(f"label map {source}: defines no labels")
    return LabelMap(tuple(labels), source)


def _pattern_text(pattern: LinearRegex) -> str:
    return f"/{pattern.pattern}/" + ("i" if pattern.ignore_case else "")


def write_labels(
    labels: np.ndarray, report: Mapping[str, Any], series: Series, out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``labels.nii.gz`` (in the series grid) and ``labels.json`` (the report) into
    ``out_dir``; neither appears unless both were written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image = as_nifti(np.asarray(labels, dtype=np.uint8), series)
    image.header.set_intent("label")
    nifti_path, json_path = out_dir / "labels.nii.gz", out_dir / "labels.json"
    tmp_json = out_dir / ".labels.json.partial"
    nifti_written = False
    try:
        tmp_json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        save_nifti(image, nifti_path)
        nifti_written = True
        tmp_json.replace(json_path)
    except BaseException:
        if nifti_written:  # a label image without its report would be read as complete
            nifti_path.unlink(missing_ok=True)
        raise
    finally:
        tmp_json.unlink(missing_ok=True)
    return nifti_path, json_path


def read_labels(path: str | Path, series: Series) -> np.ndarray:
    """A label NIfTI (model output) as a non-negative integer array in the series grid.

    Axis permutations and flips (an image saved in another orientation, e.g. RAS-canonical) are
    undone with nibabel's orientation tools; any other difference from the series grid (shape,
    spacing, origin, rotation) is an error: label maps are never resampled here.
    """
    path = Path(path)
    try:
        image = nib.load(path)
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
            raise XnatMlError(f"label image {path}: not a NIfTI image")
        if image.ndim == 4 and image.shape[3] == 1:
            image = image.slicer[..., 0]
        if image.ndim != 3:
            raise XnatMlError(f"label image {path}: has {image.ndim} dimensions, expected 3")
        image = image.as_reoriented(
            ornt_transform(io_orientation(image.affine), io_orientation(series.affine))
        )
        data = np.asanyarray(image.dataobj)
    except XnatMlError:
        raise
    except Exception as exc:  # nibabel raises assorted types on broken files
        raise XnatMlError(f"label image {path}: cannot be read ({exc})") from None
    if image.shape != series.shape or not np.allclose(
        image.affine, series.affine, atol=GRID_TOL_MM
    ):
        raise XnatMlError(
            f"label image {path}: grid {image.shape} with affine "
            f"{np.round(image.affine[:3], 3).tolist()} is not the grid of series "
            f"{series.series_uid} {series.shape} (labels are not resampled)"
        )
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise XnatMlError(f"label image {path}: holds non-integer values")
    if data.size and (data.min() < 0 or data.max() > np.iinfo(np.uint16).max):
        raise XnatMlError(f"label image {path}: values outside 0..65535")
    return data.astype(np.uint8 if data.size == 0 or data.max() <= 255 else np.uint16)
