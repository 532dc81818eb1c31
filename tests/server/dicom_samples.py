"""Tiny DICOM for the server's import and ROI tests: a few 4×4 slices per series, an RTSTRUCT
and a SEG header that reference them. Headers matter here, not anatomy."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
    generate_uid,
)

SOP_BY_MODALITY = {"MR": MRImageStorage, "CT": CTImageStorage}


def _dataset(sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


def write_series(
    folder: Path,
    *,
    patient: str = "PAT001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    modality: str = "MR",
    number: int | None = 1,
    description: str = "T1 axial",
    slices: int = 3,
    size: int = 4,
) -> dict:
    """Write a series of `slices` files of size×size pixels into folder; returns its UIDs and
    paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for k in range(slices):
        ds = _dataset(SOP_BY_MODALITY.get(modality, MRImageStorage), generate_uid())
        ds.PatientName = f"{patient}^Test"
        ds.PatientID = patient
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240131"
        ds.StudyTime = "101500"
        ds.StudyDescription = "Brain"
        ds.AccessionNumber = "ACC1"
        ds.SeriesInstanceUID = series_uid
        if number is not None:
            ds.SeriesNumber = number
        ds.SeriesDescription = description
        ds.Modality = modality
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.Rows = ds.Columns = size
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = (np.arange(size * size, dtype=np.uint16) + k).tobytes()
        path = folder / f"slice{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return {"study_uid": study_uid, "series_uid": series_uid, "frame_uid": frame_uid,
            "paths": paths}


def write_rtstruct(path: Path, series: dict, label: str = "Annotator1",
                   rois: tuple[str, ...] = ("Liver", "Tumour")) -> Path:
    ds = _dataset(RTStructureSetStorage, generate_uid())
    ds.Modality = "RTSTRUCT"
    ds.PatientID = "PAT001"
    ds.StudyInstanceUID = series["study_uid"]
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = label
    referenced_series = Dataset()
    referenced_series.SeriesInstanceUID = series["series_uid"]
    referenced_study = Dataset()
    referenced_study.RTReferencedSeriesSequence = Sequence([referenced_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = series["frame_uid"]
    frame.RTReferencedStudySequence = Sequence([referenced_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    roi_items = []
    for number, name in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ROIName = name
        roi_items.append(item)
    ds.StructureSetROISequence = Sequence(roi_items)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_seg_header(path: Path, series: dict, description: str = "AI liver") -> Path:
    """A SEG's header (no pixel data: the server reads headers only)."""
    ds = _dataset(SegmentationStorage, generate_uid())
    ds.Modality = "SEG"
    ds.StudyInstanceUID = series["study_uid"]
    ds.SeriesDescription = description
    ds.SeriesInstanceUID = generate_uid()
    ref = Dataset()
    ref.SeriesInstanceUID = series["series_uid"]
    ds.ReferencedSeriesSequence = Sequence([ref])
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentLabel = "Liver"
    ds.SegmentSequence = Sequence([segment])
    ds.save_as(path, enforce_file_format=True)
    return path


def zip_bytes(files: dict[str, Path | bytes]) -> bytes:
    """A zip of name → file or raw bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, src in files.items():
            data = src if isinstance(src, bytes) else Path(src).read_bytes()
            archive.writestr(name, data)
    return buf.getvalue()


def zip_folder(folder: Path) -> bytes:
    return zip_bytes({p.relative_to(folder).as_posix(): p
                      for p in sorted(folder.rglob("*")) if p.is_file()})
