"""A mid-slice overlay PNG of an ROI collection's label map on its scan's image, read over REST.

The collection's LABELMAP resource holds its label NIfTI on the grid of the scan it was drawn
on (roi-to-mask and infer write it so); the image is the NIFTI resource of the session's scan
with that grid, else (a session that only ever had a model run on it) that scan's DICOM series
read here. Drawn by ``imaging.overlay``: the axial slice through the middle of the labelled
voxels, labels in colour over the image in grey (black where the session has no image).
"""

from __future__ import annotations

import numpy as np
from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.overlay import overlay_png
from xnat_ml.layout import DICOM_RESOURCE, LABELMAP_RESOURCE, NIFTI_RESOURCE
from xnat_ml.xnat.queries import list_rows, resource_files
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import segment

MAX_BYTES = 512 * 2**20  # a label or image NIfTI bigger than this is not drawn


def mid_slice_png(xnat: XNATSession, project: str, session_id: str, collection: str) -> bytes:
    base = f"/data/projects/{segment(project)}/experiments/{segment(session_id)}"
    what = f"ROI collection {collection} overlay"
    with reported_as(what):
        label = _first_nifti(xnat, f"{base}/assessors/{segment(collection)}/resources/"
                                   f"{LABELMAP_RESOURCE}", what)  # fmt: skip
        if label is None:
            raise XnatMlError(f"{what}: the collection has no {LABELMAP_RESOURCE} NIfTI yet")
        scans = [f"{base}/scans/{segment(str(s['ID']))}/resources"
                 for s in list_rows(xnat, f"{base}/scans", columns="ID")]  # fmt: skip
        image = None
        for scan in scans:
            found = _first_nifti(xnat, f"{scan}/{NIFTI_RESOURCE}", what)
            if found is not None and found.shape[:3] == label.shape[:3]:
                image = np.asarray(found.dataobj)
                break
        for scan in scans if image is None else ():
            image = _dicom_pixels(xnat, f"{scan}/{DICOM_RESOURCE}", label.shape[:3])
            if image is not None:
                break
    labels = np.asarray(label.dataobj).reshape(label.shape[:3])
    return overlay_png(np.zeros(labels.shape) if image is None else image, labels)


def _dicom_pixels(xnat: XNATSession, resource: str, shape: tuple) -> np.ndarray | None:
    """The scan's DICOM series as a NIfTI-ordered array when it is on the label's grid."""
    from xnat_ml.imaging.series import load_series
    from xnat_ml.xnat.transfer import download_resource

    rows = resource_files(xnat, resource, f"scan resource {resource}")
    if not rows or sum(int(r.get("Size") or 0) for r in rows) > MAX_BYTES:
        return None
    with scratch.temporary("overlay-") as tmp:
        download_resource(xnat, resource, tmp)
        try:
            series = load_series(tmp)
        except XnatMlError:
            return None  # not one readable series: no picture under the labels
        return series.load_pixels() if series.shape == tuple(shape) else None


def _first_nifti(xnat: XNATSession, resource: str, what: str):
    import nibabel as nib

    rows = resource_files(xnat, resource, what)
    names = [r["Name"] for r in rows if str(r.get("Name", "")).endswith((".nii", ".nii.gz"))]
    if not names:
        return None
    data = xnat.get(f"{resource}/files/{segment(sorted(names)[0])}").content
    if len(data) > MAX_BYTES:
        raise XnatMlError(f"{what}: {names[0]} is too large to draw")
    try:
        return nib.Nifti1Image.from_bytes(_plain(data))
    except Exception as exc:  # nibabel raises many kinds for a broken file
        raise XnatMlError(f"{what}: {names[0]} is not a readable NIfTI ({exc})") from None


def _plain(data: bytes) -> bytes:
    import gzip

    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
