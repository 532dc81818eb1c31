"""REST paths of XNAT objects, built in one place so every segment is quoted the same way.

Labels may hold spaces or unicode; an unquoted `/` or `?` in a label would silently address
another object, so each segment is percent-encoded on its own.
"""

from __future__ import annotations

import re
from urllib.parse import quote

ROI_COLLECTION_TYPES = ("RTSTRUCT", "SEG", "AIM", "MEAS", "NIFTI")

# In XNAT's zip downloads each entry sits under ".../resources/<label>/files/"; the part after it
# is the file's path inside the resource.
_ZIP_ENTRY_PREFIX = re.compile(r"(?:^|/)resources/[^/]+/files/")
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote(safe="") leaves as is


def segment(value: str) -> str:
    """One path segment, percent-encoded (slashes included)."""
    value = str(value)
    if _UNRESERVED.fullmatch(value):  # the usual id or label: skip quote's slow path
        return value
    return quote(value, safe="")


def project_uri(project: str) -> str:
    return f"/data/projects/{segment(project)}"


def subject_uri(project: str, subject: str) -> str:
    return f"{project_uri(project)}/subjects/{segment(subject)}"


def experiment_uri(experiment_id: str) -> str:
    """A session or other experiment by its accession id (unique on the server)."""
    return f"/data/experiments/{segment(experiment_id)}"


def scan_uri(experiment_id: str, scan_id: str) -> str:
    return f"{experiment_uri(experiment_id)}/scans/{segment(scan_id)}"


def assessor_uri(experiment_id: str, assessor: str) -> str:
    return f"{experiment_uri(experiment_id)}/assessors/{segment(assessor)}"


def resource_uri(parent_uri: str, label: str) -> str:
    """A resource (by label) of any object: project, subject, session, scan or assessor."""
    return f"{parent_uri.rstrip('/')}/resources/{segment(label)}"


def roi_collection_uri(project: str, session_id: str, label: str) -> str:
    """Where the OHIF-XNAT plugin's REST API takes an ROI collection file (PUT)."""
    return (
        f"/xapi/roi/projects/{segment(project)}/sessions/{segment(session_id)}"
        f"/collections/{segment(label)}"
    )


def path_in_resource(zip_entry: str) -> str:
    """The path of a file inside its resource, given its entry name in a downloaded zip."""
    match = _ZIP_ENTRY_PREFIX.search(zip_entry)
    return zip_entry[match.end():] if match else zip_entry
