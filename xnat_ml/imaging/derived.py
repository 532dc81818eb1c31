"""What the SEG and RTSTRUCT writers share: reading the source series' headers and saving a
derived DICOM object so that a failure leaves no file behind."""

from __future__ import annotations

from pathlib import Path

import pydicom

from xnat_ml.errors import XnatMlError


def source_header(path: Path) -> pydicom.Dataset:
    """Header (no pixels) of one source image; the derived object copies patient and study."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises assorted types on broken files
        raise XnatMlError(f"{path}: unreadable DICOM header ({exc})") from exc


def save_atomically(dataset: pydicom.Dataset, path: str | Path) -> Path:
    """Write `dataset` as a DICOM file under a temporary name, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        dataset.save_as(tmp, enforce_file_format=True)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
