"""A mid-slice picture of a label map over its image, as a PNG: what a person checks first.

Files only (no XNAT): callers pass arrays or nibabel images already on one grid. matplotlib's
Agg backend draws it, so no display is needed.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from xnat_ml.errors import XnatMlError


def _volume(data: Any, what: str) -> np.ndarray:
    """A 3-D array from an array-like or a nibabel image (a 4th axis of length 1 is dropped)."""
    array = np.asanyarray(data.dataobj if hasattr(data, "dataobj") else data)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3 or 0 in array.shape:
        raise XnatMlError(f"overlay: {what} is not a 3-D volume (shape {array.shape})")
    return array


def middle_slice(labels: np.ndarray, axis: int) -> int:
    """The slice through the middle of the labelled extent along ``axis`` (the volume's
    middle when nothing is labelled)."""
    other = tuple(a for a in range(3) if a != axis)
    hit = np.flatnonzero(np.any(labels != 0, axis=other))
    if hit.size == 0:
        return labels.shape[axis] // 2
    return int((hit[0] + hit[-1]) // 2)


def overlay_png(
    image: Any,
    labels: Any,
    *,
    axis: int = 2,
    index: int | None = None,
    size: tuple[int, int] = (256, 256),
    alpha: float = 0.45,
    title: str | None = None,
) -> bytes:
    """PNG bytes (``size`` = width, height in pixels) of one slice of ``image`` in grey with
    ``labels`` (integer values, 0 = none) in colour on top. The slice is ``index`` along
    ``axis`` (default the middle of the labelled extent); RAS volumes show anterior up."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    grey, label = _volume(image, "image"), _volume(labels, "label map")
    if grey.shape != label.shape:
        raise XnatMlError(f"overlay: image {grey.shape} and label map {label.shape} differ")
    if axis not in (0, 1, 2):
        raise XnatMlError(f"overlay: axis {axis} is not 0, 1 or 2")
    where = middle_slice(label, axis) if index is None else index
    if not 0 <= where < grey.shape[axis]:
        raise XnatMlError(f"overlay: slice {where} is outside 0..{grey.shape[axis] - 1}")
    width, height = size
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise XnatMlError(f"overlay: size {width}x{height} is not within 16..4096 pixels")
    picture = np.rot90(np.take(grey, where, axis=axis).astype(np.float32))
    values = np.rot90(np.take(label, where, axis=axis)).astype(np.int64)
    finite = picture[np.isfinite(picture)]
    low, high = np.percentile(finite, (1, 99)) if finite.size else (0.0, 1.0)
    colours = colormaps["tab10"](np.mod(values - 1, 10))
    colours[..., 3] = np.where(values > 0, alpha, 0.0)

    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(np.nan_to_num(picture), cmap="gray", vmin=low, vmax=max(high, low + 1e-6),
                interpolation="nearest", aspect="auto")  # fmt: skip
    axes.imshow(colours, interpolation="nearest", aspect="auto")
    axes.set_axis_off()
    if title:
        axes.text(4, 4, title, color="white", fontsize=8, va="top",
                  bbox={"facecolor": "black", "alpha": 0.5, "pad": 2})  # fmt: skip
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
