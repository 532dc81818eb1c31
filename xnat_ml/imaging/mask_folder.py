"""A folder of per-ROI mask NIfTIs, written all at once or not at all.

`convert rtstruct` and `convert seg` both end here: one ``<stem>.nii.gz`` (uint8 0/1, the series
grid) per ROI or segment, ``masks.json`` mapping names to files (ROI names are not file names),
and with a label map ``labels.nii.gz`` + ``labels.json``. Everything is written into a hidden
sibling folder first and moved into place only when all files exist.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging import labelmap as labelmaps
from xnat_ml.imaging.filenames import NAMING_RULE, safe_stems
from xnat_ml.imaging.series import Series, as_nifti

INDEX_NAME = "masks.json"


def write_mask_folder(
    out_dir: str | Path,
    masks: Mapping[str, np.ndarray],
    series: Series,
    report: Mapping[str, Any],
    labelmap_path: str | Path | None = None,
) -> dict[str, Any]:
    """Write the masks (and a composite label map) into `out_dir`; return the index written.

    Existing files of the same names in `out_dir` are replaced; others are left alone.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise XnatMlError(f"output {out_dir}: exists and is not a directory")
    labelmap = labelmaps.load_labelmap(labelmap_path) if labelmap_path else None
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # An existing out_dir may be a mount point (a container's output mount): stage inside it,
    # since a rename from its parent would cross file systems.
    where = out_dir if out_dir.is_dir() else out_dir.parent
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=where))
    staging.chmod(0o755)  # mkdtemp's 0700 would stick to a folder created by renaming it
    try:
        stems = safe_stems(list(masks))
        files = {name: f"{stem}.nii.gz" for name, stem in zip(masks, stems, strict=True)}

        def save(name: str) -> None:
            image = as_nifti(np.asarray(masks[name]).astype(np.uint8, copy=False), series)
            nib.save(image, staging / files[name])

        # gzip dominates and releases the GIL: one thread per core roughly halves the time.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(save, files))
        index = {"files": files, "naming_rule": NAMING_RULE, **report}
        if labelmap is not None:
            labels, label_report = labelmaps.compose(masks, labelmap, shape=series.shape)
            labelmaps.write_labels(labels, label_report, series, staging)
            index["labels"] = {"image": "labels.nii.gz", "report": "labels.json"}
        (staging / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        _move_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return index


def _move_in(staging: Path, out_dir: Path) -> None:
    """A new folder appears by one rename; into an existing one, finished files are moved."""
    try:
        staging.rename(out_dir)
        return
    except OSError:
        if not out_dir.is_dir():
            raise
    for path in sorted(staging.iterdir(), key=lambda p: p.name == INDEX_NAME):
        os.replace(path, out_dir / path.name)  # the index last: it marks the folder complete
