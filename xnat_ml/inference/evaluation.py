"""A model's scores on a split of cases: each case through ``predict.infer`` (the path of
`xnat-ml infer`), scored on the source grid by ``metrics.label_scores``, then the mean per
label; written as ``metrics.json``, a Markdown table and a PNG of per-case Dice.

HD95 is infinite when a label is in the prediction or the reference only; JSON has no
infinity, so such a value is written ``null`` and the file's ``notes`` say why. The mean HD95
of a label is over the cases where it is finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib

from xnat_ml.atomic import write_bytes_atomic, write_json_atomic
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.overlay import overlay_png
from xnat_ml.inference.metrics import label_scores
from xnat_ml.inference.predict import infer
from xnat_ml.layout import EVALUATION_FILE as METRICS_FILE
from xnat_ml.training.curves import plot_case_dice

TABLE_FILE = "metrics.md"
PLOT_FILE = "dice.png"
OVERLAY_DIR = "overlays"  # <case>.png: the prediction over the case's image, mid-slice
FORMAT = "xnat-ml-evaluation"
INFINITE_NOTE = ("hd95_mm null: the label is in the prediction or the reference only "
                 "(infinite distance); mean hd95_mm is over the cases where it is finite")


@dataclass(frozen=True)
class Case:
    """One case of a split: its id, its channel images (the card's order) and its label map."""

    id: str
    images: tuple[Path, ...]
    label: Path


def evaluate(
    model_dir: str | Path, cases: Sequence[Case], labels: Mapping[int, str], device: str = "cpu",
    overlays: dict[str, bytes] | None = None,
) -> dict[str, Any]:
    """Scores of ``labels`` (value → name, background left out) per case and their means, as
    the ``cases``/``mean`` part of ``metrics.json``; ``overlays``, when given, gets each case's
    prediction over its first image (mid-slice PNG) by case id.

    The caller must have verified the model version's digests: this runs the bundle's code."""
    if not cases:
        raise XnatMlError("evaluation: no cases to score")
    values = sorted(v for v in labels if v != 0)
    rows = []
    for case in cases:
        scores, pred = _case_scores(model_dir, case, values, device)
        if overlays is not None:
            overlays[case.id] = overlay_png(nib.load(str(case.images[0])), pred, title=case.id)
        rows.append({"case": case.id,
                     "scores": {str(v): _scores_json(s) for v, s in scores.items()}})
    return {"labels": {str(v): labels[v] for v in values}, "cases": rows,
            "mean": _means(rows, values), **_notes(rows)}  # fmt: skip


def _case_scores(
    model_dir: str | Path, case: Case, values: list[int], device: str
) -> tuple[dict[int, Any], nib.Nifti1Image]:
    """One case's scores and prediction; a failure names the case."""
    try:
        pred = infer(model_dir, case.images, device)
        try:
            ref = nib.load(str(case.label))
        except Exception as exc:  # nibabel's and the decompressor's errors
            raise XnatMlError(f"label {case.label}: not a readable NIfTI "
                              f"({type(exc).__name__})") from exc  # fmt: skip
        return label_scores(pred, ref, values), pred
    except XnatMlError as exc:
        raise XnatMlError(f"case {case.id}: {exc}") from exc


def _scores_json(scores: Any) -> dict[str, float | None]:
    return {"dice": scores.dice, "hd95_mm": scores.hd95 if math.isfinite(scores.hd95) else None,
            "volume_difference_ml": scores.volume_difference, "pred_ml": scores.pred_ml,
            "ref_ml": scores.ref_ml}  # fmt: skip


def _mean(numbers: list[float]) -> float | None:
    return sum(numbers) / len(numbers) if numbers else None


def _means(rows: list[dict[str, Any]], values: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for value in values:
        each = [row["scores"][str(value)] for row in rows]
        out[str(value)] = {key: _mean([s[key] for s in each if s[key] is not None])
                           for key in ("dice", "hd95_mm", "volume_difference_ml")}  # fmt: skip
    out["all"] = {"dice": _mean([out[str(v)]["dice"] for v in values])}
    return out


def _notes(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    infinite = any(s["hd95_mm"] is None for row in rows for s in row["scores"].values())
    return {"notes": [INFINITE_NOTE]} if infinite else {}


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown_table(metrics: Mapping[str, Any]) -> str:
    """The evaluation as a Markdown table: a row per case and label, then the means."""
    head = (f"# {metrics['model']['name']} v{metrics['model']['version']} on "
            f"{metrics['dataset']['name']} v{metrics['dataset']['version']} "
            f"({metrics['split']}, {len(metrics['cases'])} cases)\n\n")  # fmt: skip
    lines = ["| case | label | Dice | HD95 (mm) | volume difference (ml) |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    labels = metrics["labels"]
    rows = [(row["case"], row["scores"]) for row in metrics["cases"]]
    rows.append(("**mean**", {v: metrics["mean"][v] for v in labels}))
    for case, scores in rows:
        for value, name in labels.items():
            s = scores[value]
            lines.append(f"| {case} | {name} | {_number(s['dice'], 4)} | "
                         f"{_number(s['hd95_mm'], 2)} | {_number(s['volume_difference_ml'], 3)} |")
    lines.append(f"| **mean** | all labels | {_number(metrics['mean']['all']['dice'], 4)} | | |")
    notes = "".join(f"\n{note}\n" for note in metrics.get("notes", []))
    return head + "\n".join(lines) + "\n" + notes


def plot_dice(metrics: Mapping[str, Any], path: Path) -> None:
    """Per-case Dice, one group of bars per case and a bar per label, written as a PNG."""
    dice = {name: [row["scores"][value]["dice"] for row in metrics["cases"]]
            for value, name in metrics["labels"].items()}  # fmt: skip
    plot_case_dice([row["case"] for row in metrics["cases"]], dice,
                   f"{metrics['split']} Dice per case", path)  # fmt: skip


def overlay_name(case: str) -> str:
    """``overlays/<case>.png``, the case id kept to characters safe in a file name."""
    return f"{OVERLAY_DIR}/{re.sub(r'[^A-Za-z0-9._-]', '_', case).lstrip('.') or 'case'}.png"


def write_evaluation(
    metrics: Mapping[str, Any], folder: Path, overlays: Mapping[str, bytes] | None = None
) -> dict[str, Path]:
    """The files of an evaluation in ``folder`` (the three, and ``overlays/<case>.png`` for
    each overlay given): file name → path."""
    folder.mkdir(parents=True, exist_ok=True)
    plot_dice(metrics, folder / PLOT_FILE)
    write_bytes_atomic(folder / TABLE_FILE, markdown_table(metrics).encode())
    write_json_atomic(folder / METRICS_FILE, {"format": FORMAT, **metrics})
    names = [METRICS_FILE, TABLE_FILE, PLOT_FILE]
    for case, png in (overlays or {}).items():
        names.append(overlay_name(case))
        (folder / OVERLAY_DIR).mkdir(exist_ok=True)
        write_bytes_atomic(folder / names[-1], png)
    return {name: folder / name for name in names}
