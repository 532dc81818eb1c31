"""A run's pictures: training curves (loss and validation metrics per epoch) and per-case Dice
(a validation's, an evaluation's), written atomically as PNGs."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xnat_ml.atomic import write_bytes_atomic


def _series(rows: Sequence[dict[str, Any]], column: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(column)
        if value not in (None, ""):
            xs.append(float(row["epoch"]))
            ys.append(float(value))
    return xs, ys


def plot_curves(rows: Sequence[dict[str, Any]], metric_columns: Sequence[str], path: Path) -> None:
    """Two panels (train loss; validation metrics) written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5), dpi=100)
    loss_axes, metric_axes = figure.subplots(1, 2)
    loss_axes.plot(*_series(rows, "train_loss"), marker=".")
    loss_axes.set(title="training loss", xlabel="epoch")
    for column in metric_columns:
        metric_axes.plot(*_series(rows, column), marker="o", label=column)
    metric_axes.set(title="validation", xlabel="epoch")
    if metric_columns:
        metric_axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())


VALIDATION_TITLE = "validation Dice per case (epoch {epoch})"


def plot_case_dice(
    cases: Sequence[str], dice: dict[str, Sequence[float | None]], title: str, path: Path
) -> None:
    """One group of bars per case, a bar per label (``dice``: label name -> a value per case,
    None or NaN where there is none), written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    names = list(dice)
    figure = Figure(figsize=(max(5.0, 0.6 * len(cases) * max(1, len(names)) + 2), 3.5), dpi=100)
    axes = figure.subplots()
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        values = [float("nan") if v is None else float(v) for v in dice[name]]
        axes.bar([c + i * width for c in range(len(cases))], values, width, label=name)
    axes.set_xticks([c + width * (len(names) - 1) / 2 for c in range(len(cases))], list(cases),
                    rotation=45 if len(cases) > 8 else 0)  # fmt: skip
    axes.set(ylim=(0, 1.05), ylabel="Dice", title=title)
    if names:
        axes.legend(loc="lower right")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
