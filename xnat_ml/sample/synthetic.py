"""Tiny synthetic sessions written straight through REST: NIfTI scan resources and ROI
collection assessors with a LABELMAP, without DICOM or conversion jobs. Tests and the dataset
benchmark make hundreds of sessions, or sessions broken on purpose, with them in seconds."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from xnat.session import XNATSession

from xnat_ml.layout import LABELMAP_RESOURCE, NIFTI_RESOURCE, ROI_COLLECTION_XSI
from xnat_ml.xnat.uris import experiment_uri, project_uri

GRID = (4, 4, 4)


def nifti_bytes(
    data: np.ndarray | None = None, affine: np.ndarray | None = None, dtype: str = "uint8"
) -> bytes:
    """A gzipped NIfTI-1 image (default: a 4x4x4 block of ones, 1 mm voxels)."""
    array = np.ones(GRID, dtype) if data is None else np.asarray(data, dtype)
    image = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)


@dataclass(frozen=True)
class SynthScan:
    id: str
    type: str
    uid: str
    nifti: bytes | None = None  # NIFTI resource file image.nii.gz, if any


@dataclass(frozen=True)
class SynthRoi:
    label: str
    series_uid: str
    labels: bytes | None = None  # LABELMAP resource file labels.nii.gz, if any
    collection_type: str = "RTSTRUCT"
    name: str = "tissues"


def add_session(
    session: XNATSession,
    project: str,
    subject: str,
    label: str,
    scans: Sequence[SynthScan],
    rois: Sequence[SynthRoi] = (),
) -> str:
    """Create subject (if new), MR session, scans and ROI collections; the session's ID."""
    base = f"{project_uri(project)}/subjects/{subject}"
    session.put(base, accepted_status=[200, 201])
    created = session.put(f"{base}/experiments/{label}", query={"xsiType": "xnat:mrSessionData"},
                          accepted_status=[200, 201])  # fmt: skip
    session_id = created.text.strip()
    uri = experiment_uri(session_id)
    for scan in scans:
        session.put(f"{uri}/scans/{scan.id}", accepted_status=[200, 201], query={
            "xsiType": "xnat:mrScanData", "type": scan.type, "series_description": scan.type,
            "UID": scan.uid})  # fmt: skip
        if scan.nifti is not None:
            _put_file(session, f"{uri}/scans/{scan.id}/resources/{NIFTI_RESOURCE}",
                      "image.nii.gz", scan.nifti)  # fmt: skip
    for roi in rois:
        done = session.put(f"{uri}/assessors/{roi.label}", accepted_status=[200, 201], query={
            "xsiType": ROI_COLLECTION_XSI, "collectionType": roi.collection_type,
            "name": roi.name, "references/seriesUID": roi.series_uid})  # fmt: skip
        if roi.labels is not None:
            assessor = f"{uri}/assessors/{done.text.strip()}"
            _put_file(session, f"{assessor}/resources/{LABELMAP_RESOURCE}", "labels.nii.gz",
                      roi.labels)  # fmt: skip
    return session_id


def _put_file(session: XNATSession, resource: str, name: str, data: bytes) -> None:
    session.put(f"{resource}/files/{name}", data=data, query={"overwrite": "true"},
                headers={"Content-Type": "application/octet-stream"},
                accepted_status=[200, 201])  # fmt: skip
