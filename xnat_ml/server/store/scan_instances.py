"""What a scan's DICOM resource holds, by UID: checked against what an ROI collection references.

The DICOM import files each instance as `<SOPInstanceUID>.dcm`, so an imported scan answers from
its catalogue alone; a file stored under another name (uploaded over REST) has its header read.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import pydicom
from sqlalchemy.orm import Session

from xnat_ml.layout import DICOM_RESOURCE
from xnat_ml.server.store import catalog
from xnat_ml.server.store.journal import archive_files
from xnat_ml.server.store.models import Scan

_UID_NAME = re.compile(r"([0-9]+(?:\.[0-9]+)+)\.dcm")  # a UID has dots: 0001.dcm is no UID


def instance_uids(db: Session, scan: Scan) -> set[str]:
    """SOP Instance UIDs of the files in the scan's DICOM resource."""
    found: set[str] = set()
    for path in _dicom_files(db, scan):
        named = _UID_NAME.fullmatch(path.name)
        uid = named.group(1) if named else _header(path).get("SOPInstanceUID")
        if uid:
            found.add(str(uid))
    return found


def study_uid(db: Session, scan: Scan) -> str:
    """StudyInstanceUID of the scan's first DICOM file ("" when it has none)."""
    return next((str(uid) for path in _dicom_files(db, scan)
                 if (uid := _header(path).get("StudyInstanceUID"))), "")  # fmt: skip


def _dicom_files(db: Session, scan: Scan) -> list[Path]:
    store = archive_files.get()
    resources = [r for r in scan.resources if r.label == DICOM_RESOURCE]
    folders = {r.pk: store.resource_dir(r.relative_dir) for r in resources}
    return [folders[row.resource_pk].joinpath(*PurePosixPath(row.path).parts)
            for row in catalog.files_of(db, resources)]  # fmt: skip


def _header(path: Path) -> pydicom.Dataset:
    """The few header fields needed; an empty dataset for a file that is not DICOM."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True,
                               specific_tags=["StudyInstanceUID", "SOPInstanceUID"])  # fmt: skip
    except Exception:  # not DICOM, truncated: pydicom raises assorted types; holds no instance
        return pydicom.Dataset()
