"""One ROI collection → the image NIfTI of the scan it annotates, plus masks and a label map.

Runs inside a Container Service job. The scan an RTSTRUCT or SEG annotates is named only inside
the file (its referenced SeriesInstanceUID), and a real XNAT's Container Service exposes no such
property of the assessor, so a command cannot mount that scan. This step reads the file, finds
the scan by UID over REST with the job's token, and fetches just what it needs: the scan's DICOM
and the one label-map file (never the project's whole ML_MODELS resource, which holds models).
A SEG whose segments are all AUTOMATIC is a model's output, not an annotation: it is skipped.
The record written beside the label map (masks.json) says who made the collection (``origin``:
human or mixed), so that a dataset build can tell human collections from AI ones.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from xnat import exceptions as xnat_exceptions
from xnat.session import XNATSession

from xnat_ml import scratch
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.ai_collections import collection_origin
from xnat_ml.imaging.mask_folder import write_mask_folder
from xnat_ml.imaging.rtstruct import read_rtstruct, rtstruct_to_masks
from xnat_ml.imaging.seg import read_seg
from xnat_ml.imaging.series import Series, load_series, save_nifti
from xnat_ml.layout import DICOM_RESOURCE, MODELS_RESOURCE, NIFTI_RESOURCE
from xnat_ml.xnat import download_resource, list_rows, upload_directory
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import experiment_uri, project_uri, resource_uri, scan_uri, segment

log = logging.getLogger(__name__)

ROI_TYPES = ("RTSTRUCT", "SEG")
IMAGE_NAME = "image.nii.gz"  # in the scan's NIFTI resource


@dataclass(frozen=True)
class Converted:
    """What one run made: the scan it found, where the image went, the mask index written."""

    scan_id: str
    series_uid: str
    image_resource: str
    labelmap: bool
    index: dict[str, Any]


def roi_file(roi: Path) -> Path:
    """The ROI file itself, or the one file of a mounted resource folder."""
    if roi.is_file():
        return roi
    if not roi.is_dir():
        raise XnatMlError(f"ROI collection {roi}: no such file or folder")
    files = sorted(p for p in roi.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) != 1:
        raise XnatMlError(f"ROI collection folder {roi}: holds {len(files)} files, expected one")
    return files[0]


def referenced_series(path: Path, roi_type: str) -> frozenset[str]:
    """SeriesInstanceUIDs the RTSTRUCT or SEG says it annotates."""
    if roi_type == "RTSTRUCT":
        uids = read_rtstruct(path).referenced_series_uids
    elif roi_type == "SEG":
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            modality = ds.get("Modality")
            uids = frozenset(
                str(item.SeriesInstanceUID)
                for item in ds.get("ReferencedSeriesSequence", [])
                if "SeriesInstanceUID" in item
            )
        except InvalidDicomError:
            raise XnatMlError(f"SEG {path}: not a DICOM file") from None
        except Exception as exc:  # truncated or corrupt files: pydicom raises assorted types
            raise XnatMlError(f"SEG {path}: unreadable DICOM ({exc})") from None
        if modality != "SEG":
            raise XnatMlError(f"SEG {path}: not a segmentation (Modality {modality!r})")
    else:
        raise XnatMlError(f"ROI collection type {roi_type!r}: not one of {', '.join(ROI_TYPES)}")
    if not uids:
        raise XnatMlError(f"{roi_type} {path}: names no referenced series")
    return uids


def find_scan(session: XNATSession, session_id: str, uids: frozenset[str]) -> tuple[str, str]:
    """(scan id, series UID) of the one scan of the session holding a referenced series.

    A real XNAT's scan listing has no UID column, so each scan's own record is read when the
    listing lacks it (one small GET per scan; sessions hold tens of scans at most).
    """
    rows = list_rows(session, f"{experiment_uri(session_id)}/scans")
    found = []
    for row in rows:
        scan_id = str(row.get("ID") or "")
        if not scan_id:
            continue
        uid = row.get("UID") or _scan_uid(session, session_id, scan_id)
        if uid in uids:
            found.append((scan_id, uid))
    if not found:
        raise XnatMlError(
            f"session {session_id}: none of its {len(rows)} scans holds the referenced series "
            f"{', '.join(sorted(uids))}"
        )
    if len(found) > 1:
        raise XnatMlError(
            f"session {session_id}: scans {', '.join(s for s, _ in found)} all hold a "
            f"referenced series; cannot tell which one is annotated"
        )
    return found[0]


def _scan_uid(session: XNATSession, session_id: str, scan_id: str) -> str | None:
    uri = scan_uri(session_id, scan_id)
    with reported_as(f"scan {scan_id} of session {session_id}"):
        body = session.get_json(uri)
    try:
        return body["items"][0]["data_fields"].get("UID")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise XnatMlError(f"scan {uri}: the answer is not an XNAT item record") from None


def fetch_labelmap(session: XNATSession, project: str, path: str, dest_dir: Path) -> Path | None:
    """Download one file of the project's ML_MODELS resource; None when it is not there."""
    parts = PurePosixPath(path).parts
    if not parts or PurePosixPath(path).is_absolute() or ".." in parts:
        raise XnatMlError(f"label map {path!r}: must be a relative path inside {MODELS_RESOURCE}")
    resource = resource_uri(project_uri(project), MODELS_RESOURCE)
    uri = f"{resource}/files/" + "/".join(segment(p) for p in parts)
    target = dest_dir / parts[-1]
    with reported_as(f"label map {path} of project {project}"):
        try:
            with open(target, "wb") as out:
                session.download_stream(uri, out)
        except xnat_exceptions.XNATResponseError as exc:
            if exc.status_code != 404:
                raise
            log.info("project %s has no %s/%s: per-ROI masks only", project, MODELS_RESOURCE, path)
            return None
    return target


def image_record(path: Path, scan_id: str) -> dict[str, Any]:
    """The image NIfTI as uploaded: its MD5 with its shape and affine (the masks' grid).

    Stored in masks.json, it lets a dataset build check the label-vs-image grid without
    reading the image: a catalogue MD5 equal to this one names these very bytes.
    """
    image = nib.load(path)
    return {
        "scan": scan_id,
        "resource": NIFTI_RESOURCE,
        "file": IMAGE_NAME,
        "md5": hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest(),
        "shape": [int(n) for n in image.shape],
        "affine": np.asarray(image.affine, dtype=float).tolist(),
    }


def _masks(
    roi_type: str, path: Path, series: Series
) -> tuple[Mapping[str, np.ndarray], dict[str, Any]]:
    """The masks and masks.json's record; it names the ROI file, not where the job saw it (a
    path inside the server's container folders is nobody's business over REST)."""
    if roi_type == "RTSTRUCT":
        result = rtstruct_to_masks(read_rtstruct(path), series)
        return result.masks(), result.report() | {"rtstruct": path.name}
    return read_seg(path, series), {"seg": path.name, "series_uid": series.series_uid}


def roi_to_mask(
    session: XNATSession,
    roi: Path,
    roi_type: str,
    session_id: str,
    project: str,
    out_dir: Path,
    labelmap: str | None = None,
) -> Converted | None:
    """Convert one ROI collection; upload the image NIfTI to its scan as the very last step.

    Masks (and labels.nii.gz with a label map) go to `out_dir`, for the command's output
    handler. Any failure happens before the upload, so a failed run leaves the archive as it was.
    None, and nothing written, for an AI SEG (all segments AUTOMATIC).
    """
    path = roi_file(roi)
    uids = referenced_series(path, roi_type)
    origin = collection_origin(path, roi_type)
    if origin == "ai":
        return None
    scan_id, uid = find_scan(session, session_id, uids)
    scan = scan_uri(session_id, scan_id)
    with scratch.temporary("roi-to-mask-") as tmp:
        work = Path(tmp)
        download_resource(session, resource_uri(scan, DICOM_RESOURCE), work / "series")
        map_file = fetch_labelmap(session, project, labelmap, work) if labelmap else None
        series = load_series(work / "series", uid)
        (work / "image").mkdir()
        save_nifti(series.to_nifti(), work / "image" / IMAGE_NAME)
        masks, report = _masks(roi_type, path, series)
        report = {**report, "origin": origin,
                  "image": image_record(work / "image" / IMAGE_NAME, scan_id)}  # fmt: skip
        index = write_mask_folder(out_dir, masks, series, report, map_file)
        uploaded = upload_directory(
            session, scan, NIFTI_RESOURCE, work / "image", format="NIFTI", content="image"
        )
    return Converted(scan_id, uid, uploaded, map_file is not None, index)
