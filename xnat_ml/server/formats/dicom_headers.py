"""What an uploaded folder of DICOM holds: studies → series → instances, read from headers only.

The import service files a study as a session and a series as a scan. Headers are read with
pixels skipped, so a large import costs one small read per file. Files that are not DICOM (or lack
the UIDs an archive needs) are set aside with a reason, never guessed at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

# Media Storage Directory (DICOMDIR): an index of files, not an instance to archive.
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Instance:
    path: Path
    sop_uid: str
    instance_number: int | None
    frames: int


@dataclass
class SeriesHeaders:
    uid: str
    number: str
    description: str
    modality: str
    fields: dict[str, str]
    instances: list[Instance] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(instance.frames for instance in self.instances)


@dataclass
class StudyHeaders:
    uid: str
    patient_name: str
    patient_id: str
    date: str  # YYYY-MM-DD or ""
    time: str  # HH:MM:SS or ""
    fields: dict[str, str]
    series: dict[str, SeriesHeaders] = field(default_factory=dict)

    @property
    def modality(self) -> str:
        """The session's modality as XNAT picks it: PET wins over CT (PET/CT), then MR, CT, any."""
        found = [series.modality for series in self.series.values()]
        for preferred in ("PT", "MR", "CT"):
            if preferred in found:
                return preferred
        return found[0] if found else ""


@dataclass
class ImportContent:
    studies: dict[str, StudyHeaders]
    skipped: dict[str, str]  # relative file name → why it was not imported

    @property
    def instance_count(self) -> int:
        return sum(
            len(series.instances)
            for study in self.studies.values()
            for series in study.series.values()
        )


def label_from(value: str) -> str:
    """An XNAT-safe label made from a DICOM name (XNAT allows letters, digits, _ and -)."""
    return _LABEL_CHARS.sub("_", value).strip("_")[:64]


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _date(value: str) -> str:
    """A DICOM DA as YYYY-MM-DD; '' when it is no date (a header's 20241345 is not stored)."""
    if not re.fullmatch(r"[0-9]{8}", value):
        return ""
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])).isoformat()
    except ValueError:
        return ""


def _time(value: str) -> str:
    match = re.match(r"(\d{2})(\d{2})(\d{2})?", value)
    return ":".join(part or "00" for part in match.groups()) if match else ""


def _read(path: Path) -> pydicom.Dataset:
    """The header of a DICOM file, with or without the Part 10 preamble; else InvalidDicomError."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        # Raw data sets without a preamble exist in the wild; accept them only if they parse
        # into something carrying the UIDs (checked by the caller).
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def read_folder(root: Path) -> ImportContent:
    """Group every DICOM instance under root by study and series; everything else is skipped."""
    content = ImportContent(studies={}, skipped={})
    seen_sops: set[str] = set()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        try:
            ds = _read(path)
            uids = [_text(ds, f"{level}InstanceUID") for level in ("Study", "Series", "SOP")]
            sop_class = _text(ds, "SOPClassUID") or _text(ds.file_meta, "MediaStorageSOPClassUID")
        except Exception as exc:  # pydicom raises many types on junk; all mean "not DICOM"
            content.skipped[name] = f"not DICOM ({type(exc).__name__})"
            continue
        if sop_class == DICOMDIR_SOP_CLASS:
            content.skipped[name] = "DICOMDIR index"
            continue
        if not all(uids):
            content.skipped[name] = "not DICOM or lacks Study/Series/SOP Instance UID"
            continue
        if not all(_UID.match(uid) and len(uid) <= 64 for uid in uids):
            content.skipped[name] = "malformed UID"
            continue
        study_uid, series_uid, sop_uid = uids
        if sop_uid in seen_sops:
            content.skipped[name] = f"duplicate of SOP Instance {sop_uid}"
            continue
        seen_sops.add(sop_uid)
        study = content.studies.get(study_uid)
        if study is None:
            study = content.studies[study_uid] = StudyHeaders(
                uid=study_uid,
                patient_name=_text(ds, "PatientName"),
                patient_id=_text(ds, "PatientID"),
                date=_date(_text(ds, "StudyDate")),
                time=_time(_text(ds, "StudyTime")),
                fields={
                    "UID": study_uid,
                    "dcmAccessionNumber": _text(ds, "AccessionNumber"),
                    "dcmPatientName": _text(ds, "PatientName"),
                    "dcmPatientId": _text(ds, "PatientID"),
                    "study_id": _text(ds, "StudyID"),
                    "session_type": _text(ds, "StudyDescription"),
                },
            )
        series = study.series.get(series_uid)
        if series is None:
            series = study.series[series_uid] = SeriesHeaders(
                uid=series_uid,
                number=_text(ds, "SeriesNumber"),
                description=_text(ds, "SeriesDescription"),
                modality=_text(ds, "Modality").upper(),
                fields={
                    "scanner/manufacturer": _text(ds, "Manufacturer"),
                    "scanner/model": _text(ds, "ManufacturerModelName"),
                    "frameOfReferenceUID": _text(ds, "FrameOfReferenceUID"),
                    "sopClassUID": sop_class,
                },
            )
        number = _text(ds, "InstanceNumber")
        frames = _text(ds, "NumberOfFrames")
        series.instances.append(
            Instance(
                path=path,
                sop_uid=sop_uid,
                instance_number=int(number) if number.lstrip("-").isdigit() else None,
                frames=int(frames) if frames.isdigit() else 1,
            )
        )
    return content
