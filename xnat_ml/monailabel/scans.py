"""A scan's series and image NIfTI, converted from its DICOM once and kept while the DICOM
resource's file listing (names, sizes, digests) stays the same: an annotator's next request on
the same image skips the download and the conversion. Each use lists the files as the caller,
so XNAT still decides who may read the scan.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.series import Series, load_series, save_nifti
from xnat_ml.layout import DICOM_RESOURCE
from xnat_ml.monailabel.images import Image
from xnat_ml.xnat import download_resource, list_files
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import resource_uri, scan_uri

KEPT = 16  # scans kept converted

_kept: OrderedDict[str, tuple[Path, Series]] = OrderedDict()
_lock = threading.Lock()
_converting = threading.Lock()  # one download at a time: a second caller of a scan waits


def scan_image(session: XNATSession, xnat_url: str, image: Image) -> tuple[Path, Series]:
    """(the scan's image NIfTI, its series) from the kept copy, or downloaded and converted."""
    uri = resource_uri(scan_uri(image.session_id, image.scan_id), DICOM_RESOURCE)
    what = f"image {image.id} (scan {image.scan_id} of session {image.session_label})"
    with reported_as(f"{what}: its {DICOM_RESOURCE} resource"):
        rows = list_files(session, uri)
    if not rows:
        raise XnatMlError(f"{what}: its {DICOM_RESOURCE} resource holds no files")
    listing = sorted((str(r.get("Name")), str(r.get("Size")), str(r.get("digest"))) for r in rows)
    key = hashlib.sha256(json.dumps([xnat_url, uri, listing]).encode()).hexdigest()[:32]
    with _converting:
        with _lock:
            if key in _kept and _kept[key][0].is_file():
                _kept.move_to_end(key)
                return _kept[key]
        folder = scratch.scratch_dir() / "monailabel-scans" / key
        shutil.rmtree(folder, ignore_errors=True)
        with reported_as(f"{what}: its {DICOM_RESOURCE} resource"):
            download_resource(session, uri, folder / "dicom")
        series = load_series(folder / "dicom")
        nifti = save_nifti(series.to_nifti(), folder / "image.nii.gz")
        with _lock:
            _kept[key] = (nifti, series)
            while len(_kept) > KEPT:
                old, _ = _kept.popitem(last=False)
                shutil.rmtree(old.parent, ignore_errors=True)
        return nifti, series
