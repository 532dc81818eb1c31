"""The XNAT datatypes this server implements, their inheritance, and DICOM modality → datatype.

Kept in one table so the XSD we serve, xsiType validation, `xsiType=` filters (a supertype such as
xnat:imageSessionData matches all sessions) and DICOM import agree.
"""

from __future__ import annotations

# datatype → its base datatype (None for roots); mirrors the extension chain in schemas/*.xsd.
BASE_TYPE: dict[str, str | None] = {
    "xnat:projectData": None,
    "xnat:subjectData": None,
    "xnat:experimentData": None,
    "xnat:subjectAssessorData": "xnat:experimentData",
    "xnat:imageSessionData": "xnat:subjectAssessorData",
    "xnat:mrSessionData": "xnat:imageSessionData",
    "xnat:ctSessionData": "xnat:imageSessionData",
    "xnat:petSessionData": "xnat:imageSessionData",
    "xnat:otherDicomSessionData": "xnat:imageSessionData",
    "xnat:imageScanData": None,
    "xnat:mrScanData": "xnat:imageScanData",
    "xnat:ctScanData": "xnat:imageScanData",
    "xnat:petScanData": "xnat:imageScanData",
    "xnat:otherDicomScanData": "xnat:imageScanData",
    "xnat:derivedData": "xnat:experimentData",
    "xnat:imageAssessorData": "xnat:derivedData",
    "icr:roiCollectionData": "xnat:imageAssessorData",
    "xnat:abstractResource": None,
    "xnat:resourceCatalog": "xnat:abstractResource",
}

SESSION_TYPE_BY_MODALITY = {
    "MR": "xnat:mrSessionData",
    "CT": "xnat:ctSessionData",
    "PT": "xnat:petSessionData",
}
SCAN_TYPE_BY_MODALITY = {
    "MR": "xnat:mrScanData",
    "CT": "xnat:ctScanData",
    "PT": "xnat:petScanData",
}
OTHER_SESSION_TYPE = "xnat:otherDicomSessionData"
OTHER_SCAN_TYPE = "xnat:otherDicomScanData"


def is_a(xsi_type: str, base: str) -> bool:
    """Whether `xsi_type` is `base` or extends it (case-insensitive, as XNAT treats xsiType)."""
    wanted = base.lower()
    current: str | None = canonical(xsi_type)
    while current is not None:
        if current.lower() == wanted:
            return True
        current = BASE_TYPE[current]
    return False


def canonical(xsi_type: str) -> str | None:
    """The datatype's canonical spelling, or None when this server does not implement it."""
    lowered = xsi_type.strip().lower()
    return next((name for name in BASE_TYPE if name.lower() == lowered), None)


def subtypes(base: str) -> list[str]:
    """All implemented datatypes that are `base` or extend it."""
    return [name for name in BASE_TYPE if is_a(name, base)]


def concrete_types(base: str) -> list[str]:
    """Datatypes extending `base` that objects may have (no other datatype extends them)."""
    bases = {parent for parent in BASE_TYPE.values() if parent}
    return [name for name in subtypes(base) if name not in bases]


def session_type_for(modality: str) -> str:
    return SESSION_TYPE_BY_MODALITY.get(modality.upper(), OTHER_SESSION_TYPE)


def scan_type_for(modality: str) -> str:
    return SCAN_TYPE_BY_MODALITY.get(modality.upper(), OTHER_SCAN_TYPE)
