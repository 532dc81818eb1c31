"""What an uploaded ROI collection file says about itself: its name and the series it annotates.

The OHIF-XNAT plugin reads these from the file rather than trusting the client, and refuses a
file that is not of the announced type; so do we. DICOM types must carry the right SOP class;
AIM XML is parsed with defusedxml and may hold no DTD. For RTSTRUCT and SEG the studies and SOP
instances the file references are read too: the server checks them against the session.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel
import pydicom
from defusedxml.ElementTree import parse as parse_xml
from pydicom.uid import RTStructureSetStorage, SegmentationStorage

from xnat_ml.bounded_json import read_json

# type → file suffix inside the collection's resource
COLLECTION_TYPES = {
    "RTSTRUCT": ".dcm",
    "SEG": ".dcm",
    "AIM": ".xml",
    "MEAS": ".json",
    "NIFTI": ".nii.gz",
}


class RoiFileError(ValueError):
    """The uploaded file is not a valid collection of the announced type."""


@dataclass
class RoiContent:
    name: str
    series_uids: list[str]
    roi_names: list[str] = field(default_factory=list)
    uid: str = ""
    study_uids: list[str] = field(default_factory=list)  # RTSTRUCT, SEG: its own and referenced
    instance_uids: list[str] = field(default_factory=list)  # RTSTRUCT, SEG: referenced images


def file_suffix(path: Path, collection_type: str) -> str:
    """The suffix to store (and, for NIfTI, read) the file under; NIfTI's by its content."""
    if collection_type == "NIFTI":
        with open(path, "rb") as fh:
            return ".nii.gz" if fh.read(2) == b"\x1f\x8b" else ".nii"
    return COLLECTION_TYPES[collection_type]


def read_collection(path: Path, collection_type: str) -> RoiContent:
    """Name, referenced series and ROI names of a collection file; RoiFileError when invalid.

    A NIfTI file must already carry the suffix `file_suffix` gives (nibabel goes by the name).
    """
    reader = _READERS.get(collection_type)
    if reader is None:
        raise RoiFileError(f"type {collection_type!r} is not one of {', '.join(COLLECTION_TYPES)}")
    try:
        return reader(path)
    except RoiFileError:
        raise
    except Exception as exc:  # parsers of outside data raise many types; all mean "invalid"
        raise RoiFileError(f"not a readable {collection_type} file ({type(exc).__name__})") from exc


def _dicom(path: Path, sop_class: str, collection_type: str) -> pydicom.Dataset:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    found = str(ds.get("SOPClassUID", ""))
    if found != sop_class:
        raise RoiFileError(f"SOP class {found or 'missing'} is not {collection_type} ({sop_class})")
    return ds


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _sop_references(items: Iterable[pydicom.Dataset]) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in items
            if "ReferencedSOPInstanceUID" in item]  # fmt: skip


def _rtstruct(path: Path) -> RoiContent:
    ds = _dicom(path, RTStructureSetStorage, "RTSTRUCT")
    studies = [
        study
        for frame in ds.get("ReferencedFrameOfReferenceSequence", [])
        for study in frame.get("RTReferencedStudySequence", [])
    ]
    series = [s for study in studies for s in study.get("RTReferencedSeriesSequence", [])]
    contour_images = [
        image
        for roi in ds.get("ROIContourSequence", [])
        for contour in roi.get("ContourSequence", [])
        for image in contour.get("ContourImageSequence", [])
    ]
    return RoiContent(
        name=str(ds.get("StructureSetLabel", "") or ds.get("SeriesDescription", "")),
        series_uids=_unique([str(s.SeriesInstanceUID) for s in series
                             if "SeriesInstanceUID" in s]),  # fmt: skip
        roi_names=[str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])],
        uid=str(ds.get("SOPInstanceUID", "")),
        study_uids=_unique([str(ds.get("StudyInstanceUID", "")), *_sop_references(studies)]),
        instance_uids=_unique([
            *_sop_references(i for s in series for i in s.get("ContourImageSequence", [])),
            *_sop_references(contour_images),
        ]),
    )


def _seg(path: Path) -> RoiContent:
    ds = _dicom(path, SegmentationStorage, "SEG")
    series = list(ds.get("ReferencedSeriesSequence", []))
    groups = [*ds.get("SharedFunctionalGroupsSequence", []),
              *ds.get("PerFrameFunctionalGroupsSequence", [])]  # fmt: skip
    sources = [
        source
        for group in groups
        for derivation in group.get("DerivationImageSequence", [])
        for source in derivation.get("SourceImageSequence", [])
    ]
    return RoiContent(
        name=str(ds.get("SeriesDescription", "") or ds.get("ContentLabel", "")),
        series_uids=_unique([str(s.SeriesInstanceUID) for s in series
                             if "SeriesInstanceUID" in s]),  # fmt: skip
        roi_names=[str(s.get("SegmentLabel", "")) for s in ds.get("SegmentSequence", [])],
        uid=str(ds.get("SOPInstanceUID", "")),
        study_uids=_unique([str(ds.get("StudyInstanceUID", ""))]),
        instance_uids=_unique([
            *_sop_references(i for s in series for i in s.get("ReferencedInstanceSequence", [])),
            *_sop_references(sources),
        ]),
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _aim(path: Path) -> RoiContent:
    # defusedxml: a DTD (and so any entity, internal or external) is refused outright. Plain
    # expat expands a modest "billion laughs" within its amplification limit.
    root = parse_xml(path, forbid_dtd=True).getroot()
    if _local(root.tag) != "ImageAnnotationCollection":
        raise RoiFileError(f"root element {_local(root.tag)} is not ImageAnnotationCollection")
    names = [
        el.get("value", "") for el in root.iter() if _local(el.tag) == "name" and el.get("value")
    ]
    series = [
        child.get("root", "")
        for el in root.iter()
        if _local(el.tag) == "imageSeries"
        for child in el
        if _local(child.tag) == "instanceUid"
    ]
    return RoiContent(name=names[0] if names else "", series_uids=_unique(series), roi_names=names)


def _meas(path: Path) -> RoiContent:
    data = read_json(path, "MEAS collection", error=RoiFileError, max_bytes=64 * 2**20)
    if not isinstance(data, dict):
        raise RoiFileError("a MEAS collection must be a JSON object")
    series = [
        str(ref.get("SeriesInstanceUID", ""))
        for ref in data.get("imageReference", []) or []
        if isinstance(ref, dict)
    ]
    return RoiContent(name=str(data.get("name", "")), series_uids=_unique(series))


def _nifti(path: Path) -> RoiContent:
    image = nibabel.load(path)
    if len(image.shape) < 3:
        raise RoiFileError(f"a NIFTI collection must be a 3-D label map, not shape {image.shape}")
    return RoiContent(name="", series_uids=[])


_READERS = {"RTSTRUCT": _rtstruct, "SEG": _seg, "AIM": _aim, "MEAS": _meas, "NIFTI": _nifti}
