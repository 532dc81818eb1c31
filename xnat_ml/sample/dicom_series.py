"""A rendered volume written as a DICOM MR image series, one file per slice.

Geometry goes in the tags readers use (ImagePositionPatient per slice, ImageOrientationPatient,
PixelSpacing, SliceThickness, SpacingBetweenSlices, one FrameOfReferenceUID per session), and
every UID is derived from the sample's own identity (`generate_uid(entropy_srcs=...)`), so the
same seed writes the same files and a re-import finds the same series.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from xnat_ml import __version__
from xnat_ml.sample.subjects import Grid, Subject, Volumes


@dataclass(frozen=True)
class Acquisition:
    """What a scanner writes about how the series was acquired."""

    description: str
    series_number: int
    scanning_sequence: str
    sequence_variant: str
    dimensions: str  # MRAcquisitionType: 2D or 3D
    repetition_time: float  # ms
    echo_time: float  # ms
    flip_angle: float  # degrees
    inversion_time: float | None = None  # ms


T1W = Acquisition("T1w MPRAGE", 2, "GR\\IR", "SP\\MP", "3D", 2300.0, 2.98, 9.0, 900.0)
T2W = Acquisition("T2w TSE", 3, "SE", "SK\\SP", "2D", 6000.0, 100.0, 150.0)


def study_uid(project: str, subject: Subject, what: str) -> str:
    """A UID of this subject's study, the same for the same project, seed and subject."""
    sources = ["xnat-ml sample", project, str(subject.seed), subject.label, what]
    return generate_uid(entropy_srcs=sources)


def _ds(values: np.ndarray) -> list[str]:
    """Decimal strings DICOM accepts (16 characters at most)."""
    return [f"{float(v):.10g}"[:16] for v in values]


def write_series(
    volumes: Volumes, subject: Subject, acquisition: Acquisition, project: str, out_dir: Path
) -> list[Path]:
    """Write one file per slice of `volumes.image` into `out_dir`; the paths, by slice."""
    grid = volumes.grid
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = study_uid(project, subject, f"series {acquisition.series_number}")
    header = _header(subject, acquisition, project, series_uid, grid)
    window_centre = float(np.percentile(volumes.image, 99)) / 2
    paths = []
    for k in range(grid.slices):
        ds = header.copy()
        instance_uid = study_uid(project, subject, f"image {acquisition.series_number}/{k}")
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPInstanceUID = instance_uid
        ds.InstanceNumber = k + 1
        position = grid.position(k)
        ds.ImagePositionPatient = _ds(position)
        ds.SliceLocation = _ds([position @ grid.normal])[0]
        ds.WindowCenter = f"{window_centre:.0f}"
        ds.WindowWidth = f"{2 * window_centre:.0f}"
        ds.PixelData = np.ascontiguousarray(volumes.image[:, :, k].T).astype("<u2").tobytes()
        path = out_dir / f"{acquisition.series_number:03d}_{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _header(
    subject: Subject, acquisition: Acquisition, project: str, series_uid: str, grid: Grid
) -> Dataset:
    """The attributes all slices of the series share."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = subject.study_date.strftime("%Y%m%d")
    ds.StudyTime = "093000"
    ds.SeriesTime = ds.AcquisitionTime = f"09{30 + acquisition.series_number * 4:02d}00"
    ds.AccessionNumber = f"{project[:8]}{subject.index + 1:04d}"
    ds.Modality = "MR"
    ds.Manufacturer = "xnat-ml sample data"
    ds.ManufacturerModelName = "MNI152 phantom"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "xnat-ml"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Brain MRI"
    ds.SeriesDescription = ds.ProtocolName = acquisition.description
    ds.PatientName = subject.label
    ds.PatientID = subject.session_label
    ds.PatientBirthDate = subject.birth_date.strftime("%Y%m%d")
    ds.PatientSex = subject.sex
    ds.PatientAge = f"{(subject.study_date - subject.birth_date).days // 365:03d}Y"
    ds.BodyPartExamined = "BRAIN"
    ds.ScanningSequence = acquisition.scanning_sequence
    ds.SequenceVariant = acquisition.sequence_variant
    ds.MRAcquisitionType = acquisition.dimensions
    ds.RepetitionTime = f"{acquisition.repetition_time:g}"
    ds.EchoTime = f"{acquisition.echo_time:g}"
    if acquisition.inversion_time is not None:
        ds.InversionTime = f"{acquisition.inversion_time:g}"
    ds.FlipAngle = f"{acquisition.flip_angle:g}"
    ds.MagneticFieldStrength = "3"
    ds.SliceThickness = f"{grid.slice_spacing:g}"
    ds.SpacingBetweenSlices = f"{grid.slice_spacing:g}"
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study_uid(project, subject, "study")
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = acquisition.series_number
    ds.FrameOfReferenceUID = study_uid(project, subject, "frame of reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = _ds(np.concatenate([grid.row_cosine, grid.column_cosine]))
    ds.PixelSpacing = _ds(grid.pixel_spacing)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds
