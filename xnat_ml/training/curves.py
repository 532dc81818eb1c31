"""The training-curves PNG of a run: loss and validation metrics per epoch."""

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
