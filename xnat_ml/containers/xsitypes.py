"""XNAT datatypes a wrapper may name as its context, and how they nest.

A wrapper's `contexts` are xsi types; XNAT offers the wrapper on any object whose type is the
context or one of its descendants (e.g. `xnat:imageSessionData` covers every modality's session).
"""

from __future__ import annotations

_MODALITIES = (
    "mr ct pet petmr cr dx mg us xa rt otherDicom nm ecg eeg meg eps es esv gm gmv hd io op opt "
    "rf sm sr xa3D xc xcv dx3DCraniofacial seg"
).split()
_SCAN_ONLY = "rtImage sc mrs voiceAudio".split()

SESSION_TYPES = frozenset(f"xnat:{m}SessionData" for m in _MODALITIES)
SCAN_TYPES = frozenset(f"xnat:{m}ScanData" for m in (*_MODALITIES, *_SCAN_ONLY))
ASSESSOR_TYPES = frozenset(
    {
        "icr:roiCollectionData",
        "xnat:qcAssessmentData",
        "xnat:qcManualAssessorData",
        "xnat:statisticsData",
        "xnat:reconstructedImageData",
        "fs:fsData",
        "fs:longFSData",
        "proc:genProcData",
    }
)

# abstract type -> the object kind (wrapper input type) it stands for
ABSTRACT_TYPES = {
    "xnat:projectData": "Project",
    "xnat:abstractProjectAsset": "ProjectAsset",
    "xnat:subjectData": "Subject",
    "xnat:experimentData": "Session",
    "xnat:subjectAssessorData": "SubjectAssessor",
    "xnat:imageSessionData": "Session",
    "xnat:imageScanData": "Scan",
    "xnat:imageAssessorData": "Assessor",
    "xnat:abstractResource": "Resource",
    "xnat:resourceCatalog": "Resource",
}

KNOWN_TYPES = frozenset(ABSTRACT_TYPES) | SESSION_TYPES | SCAN_TYPES | ASSESSOR_TYPES


def object_kind(xsi_type: str) -> str | None:
    """The wrapper input type (Project, Subject, Session, Scan, Assessor, ...) of an xsi type."""
    if xsi_type in ABSTRACT_TYPES:
        return ABSTRACT_TYPES[xsi_type]
    if xsi_type in SESSION_TYPES:
        return "Session"
    if xsi_type in SCAN_TYPES:
        return "Scan"
    if xsi_type in ASSESSOR_TYPES:
        return "Assessor"
    return None


def is_known(xsi_type: str) -> bool:
    return xsi_type in KNOWN_TYPES


def context_matches(context: str, xsi_type: str) -> bool:
    """True when an object of `xsi_type` falls under a wrapper context (itself or a subtype)."""
    if context == xsi_type:
        return True
    kind = object_kind(xsi_type)
    if context in ("xnat:imageSessionData", "xnat:subjectAssessorData"):
        return kind == "Session"
    if context == "xnat:experimentData":
        return kind in ("Session", "Assessor", "SubjectAssessor")
    if context == "xnat:imageScanData":
        return kind == "Scan"
    if context == "xnat:imageAssessorData":
        return kind == "Assessor"
    return False
