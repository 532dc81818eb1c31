"""ROI collections stored the way the OHIF-XNAT plugin stores them (`icr:roiCollectionData`)."""

from __future__ import annotations

from pathlib import Path

from xnat.session import XNATSession

from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.responses import reported_as
from xnat_ml.xnat.uris import ROI_COLLECTION_TYPES, roi_collection_uri


def upload_roi_collection(
    session: XNATSession,
    project: str,
    session_id: str,
    label: str,
    path: str | Path,
    collection_type: str = "RTSTRUCT",
    overwrite: bool = False,
) -> str:
    """Store one RTSTRUCT/SEG file as ROI collection `label` of a session; the server's answer.

    The server creates the assessor (collectionType, name, referenced series) from the file.
    """
    if collection_type not in ROI_COLLECTION_TYPES:
        raise XnatMlError(
            f"ROI collection {label}: type {collection_type!r} is not one of {ROI_COLLECTION_TYPES}"
        )
    uri = roi_collection_uri(project, session_id, label)
    query = {"type": collection_type, "overwrite": str(overwrite).lower()}
    with open(path, "rb") as body, reported_as(f"ROI collection {label} of session {session_id}"):
        response = session.put(
            uri, data=body, query=query, headers={"Content-Type": "application/octet-stream"}
        )
    return response.text.strip()
