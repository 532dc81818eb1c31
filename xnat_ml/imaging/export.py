"""Model output back to DICOM: a label NIfTI becomes a SEG or an RTSTRUCT that OHIF shows.

One entry point for the CLI and for inference, so both name segments and ROIs from the model's
label map in the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.labelmap import LabelMap, read_labels
from xnat_ml.imaging.rtstruct_write import write_rtstruct
from xnat_ml.imaging.seg_write import write_seg
from xnat_ml.imaging.series import Series

EXPORT_KINDS = ("seg", "rtstruct")


def export_labels(
    labels_path: str | Path,
    series: Series,
    labelmap: LabelMap,
    out_path: str | Path,
    kind: Literal["seg", "rtstruct"],
    algorithm_name: str = "xnat-ml",
) -> Path:
    """Write the label NIfTI at `labels_path` (in the series grid) as a SEG or an RTSTRUCT.

    Every non-zero value must be in `labelmap`: an unnamed value would reach OHIF as an
    anonymous segment, so it is refused instead.
    """
    if kind not in EXPORT_KINDS:
        raise XnatMlError(f"export kind {kind!r}: expected one of {', '.join(EXPORT_KINDS)}")
    labels = read_labels(labels_path, series)
    segments = labelmap.segments()
    unnamed = sorted({int(v) for v in np.unique(labels)} - {0} - set(segments))
    if unnamed:
        raise XnatMlError(f"label image {labels_path}: values {unnamed} are not in the label map")
    description = f"{algorithm_name} segmentation"
    if kind == "seg":
        return write_seg(
            labels,
            segments,
            series,
            out_path,
            algorithm_name=algorithm_name,
            series_description=description,
        )
    present = {value: name for value, (name, _) in segments.items() if np.any(labels == value)}
    if not present:
        raise XnatMlError(f"label image {labels_path}: no labelled voxel to write as an RTSTRUCT")
    return write_rtstruct(
        {name: labels == value for value, name in present.items()},
        series,
        out_path,
        colors={name: rgb for name, rgb in segments.values()},
        label=algorithm_name,
        series_description=description,
    )
