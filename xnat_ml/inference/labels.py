"""One label volume from a bundle's post-processed output: a label model's single channel of
label values as is, a region model's binary channels (which may overlap) painted by the card's
rule into exclusive values."""

from __future__ import annotations

import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.training.model import LABELS, Output


def paint_regions(channels: np.ndarray, paint: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Exclusive labels from binary region channels (channel first): each ``(channel, value)``
    painted in order, so a later pair wins where regions overlap (BraTS WT→2, TC→1, ET→4)."""
    labels = np.zeros(channels.shape[1:], _label_dtype(max(v for _, v in paint)))
    for channel, value in paint:
        if channel >= channels.shape[0]:
            raise XnatMlError(f"paint rule: channel {channel} is not in the model's "
                              f"{channels.shape[0]} output channels")  # fmt: skip
        labels[channels[channel] > 0.5] = value
    return labels


def to_labels(pred: np.ndarray, output: Output, model: str) -> np.ndarray:
    """One integer label volume (no channel axis) from a channel-first post-processed output."""
    if output.kind != LABELS:
        return paint_regions(pred, output.paint)
    if pred.shape[0] != 1:
        raise XnatMlError(
            f"model {model}: its card says output kind '{LABELS}' (one channel of label values) "
            f"but its post-processing gives {pred.shape[0]} channels; add an argmax to "
            "inference.json's postprocessing or make the card's output kind 'regions'"
        )
    values = np.rint(pred[0])
    if values.min(initial=0) < 0:
        raise XnatMlError(f"model {model}: its output has negative label values")
    return values.astype(_label_dtype(int(values.max(initial=0))))


def _label_dtype(largest: int) -> type:
    return np.uint8 if largest < 256 else np.uint16
