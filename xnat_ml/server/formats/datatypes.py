"""The XNAT datatypes this server implements, their inheritance, field types and DICOM modality.

Kept in one table so the XSD we serve, xsiType validation, `xsiType=` filters (a supertype such as
xnat:imageSessionData matches all sessions) and DICOM import agree. The types of fields (xs:date,
xs:integer, ...) are read from the served XSD itself, so what we declare is what we enforce.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from defusedxml.ElementTree import fromstring

XS = "{http://www.w3.org/2001/XMLSchema}"
SCHEMAS = resources.files(__package__) / "schemas"  # the XSDs we serve (GET /xapi/schemas)
SCHEMA_FILES = {"xnat": "xnat.xsd", "icr": "icr.xsd"}  # prefix → file in schemas/

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
    "xnat:qcAssessmentData": "xnat:imageAssessorData",
    "xnat:mrAssessorData": "xnat:imageAssessorData",
    "xnat:petAssessorData": "xnat:imageAssessorData",
    "xnat:reconstructedImageData": None,
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


@cache
def _declared_field_types() -> dict[str, dict[str, str]]:
    """datatype → {field: xs type} as its own complexType in schemas/*.xsd declares them."""
    declared: dict[str, dict[str, str]] = {}
    for prefix, name in SCHEMA_FILES.items():
        root = fromstring((SCHEMAS / name).read_bytes())
        for complex_type in root.iter(f"{XS}complexType"):
            if complex_type.get("name") is None:
                continue  # an anonymous wrapper (resources, references): no typed leaves
            fields = declared.setdefault(f"{prefix}:{complex_type.get('name')}", {})
            for decl in complex_type.iter():
                kind = decl.get("type") or ""
                if decl.tag in (f"{XS}element", f"{XS}attribute") and kind.startswith("xs:"):
                    fields[decl.get("name").lower()] = kind
    return declared


def field_type(xsi_type: str, field: str) -> str | None:
    """The XSD type (`xs:date`, `xs:integer`, ...) of a datatype's field, inherited ones included;
    None for fields the schemas do not declare (they are kept as free text)."""
    current = canonical(xsi_type)
    declared = _declared_field_types()
    while current is not None:
        found = declared.get(current, {}).get(field.lower())
        if found is not None:
            return found
        current = BASE_TYPE[current]
    return None
