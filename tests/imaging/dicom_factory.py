"""Small synthetic DICOM for tests: CT series with any geometry, and RTSTRUCTs, broken on request.

`write_series` makes a regular (or deliberately irregular) stack; `write_rtstruct` writes contours
as given, without validating them, so tests can feed converters hostile input.

    info = write_series(tmp_path / "ct", rows=20, columns=30, slices=8)
    write_rtstruct(tmp_path / "rs.dcm", info, {"box": [square_contour(...)]})
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    RTStructureSetStorage,
    generate_uid,
)

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class SeriesInfo:
    """What `write_series` wrote, in slice order along the normal (not file or instance order)."""

    folder: Path
    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    sop_instance_uids: list[str]
    positions: np.ndarray  # (K, 3) LPS
    orientation: tuple[float, ...]
    pixel_spacing: tuple[float, float]  # (between rows, between columns)
    rows: int
    columns: int
    files: list[Path] = field(default_factory=list)
    pixels: np.ndarray | None = None  # stored values, (K, rows, columns)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[:3], self.orientation[3:])

    def lps(self, i: float, j: float, k: float) -> np.ndarray:
        """Patient position of voxel (column i, row j, slice k), exact for a regular stack."""
        row_cos = np.asarray(self.orientation[:3])
        col_cos = np.asarray(self.orientation[3:])
        k0 = int(np.floor(k))
        k1 = min(k0 + 1, len(self.positions) - 1)
        base = self.positions[k0] + (k - k0) * (self.positions[k1] - self.positions[k0])
        return base + i * self.pixel_spacing[1] * row_cos + j * self.pixel_spacing[0] * col_cos


def _meta(sop_class: str, sop_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def _patient_study(ds: Dataset, study_uid: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: ROI names may be any text
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYNTH001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = "20260101"
    ds.StudyTime = "000000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""


def write_series(
    folder: Path,
    *,
    rows: int = 16,
    columns: int = 16,
    slices: int = 6,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    slice_spacing: float = 1.0,
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    positions: np.ndarray | None = None,
    pixels: np.ndarray | Callable[[int], np.ndarray] | None = None,
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    shuffle_names: bool = False,
    instance_numbers: str = "forward",
    seed: int = 0,
) -> SeriesInfo:
    """Write a CT series, one file per slice; pixel (k, row, col) defaults to a unique ramp.

    `positions` overrides the regular stack (for uneven spacing or tilt); `instance_numbers`
    is "forward", "reverse" or "random"; `shuffle_names` makes file names unrelated to order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    orientation = tuple(float(v) for v in orientation)
    normal = np.cross(orientation[:3], orientation[3:])
    if positions is None:
        positions = np.asarray(origin, float) + np.outer(np.arange(slices) * slice_spacing, normal)
    positions = np.asarray(positions, float)
    slices = len(positions)
    if pixels is None:
        ramp = np.arange(rows * columns, dtype=np.int16).reshape(rows, columns) % 1000
        stack = np.stack([ramp + 1000 * (k % 30) for k in range(slices)])
    elif callable(pixels):
        stack = np.stack([pixels(k) for k in range(slices)])
    else:
        stack = np.asarray(pixels)
    stack = stack.astype(np.int16)

    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    numbers = list(range(1, slices + 1))
    if instance_numbers == "reverse":
        numbers.reverse()
    elif instance_numbers == "random":
        rng.shuffle(numbers)
    names = [f"slice_{k:04d}.dcm" for k in range(slices)]
    if shuffle_names:
        names = [f"{rng.getrandbits(48):012x}.dcm" for _ in range(slices)]

    info = SeriesInfo(
        folder=folder,
        series_uid=series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=for_uid,
        sop_instance_uids=[],
        positions=positions,
        orientation=orientation,
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        rows=rows,
        columns=columns,
        pixels=stack,
    )
    for k in range(slices):
        sop_uid = generate_uid()
        ds = Dataset()
        ds.file_meta = _meta(CTImageStorage, sop_uid)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        _patient_study(ds, study_uid)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = "synthetic"
        ds.InstanceNumber = numbers[k]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_spacing:.6f}"
        ds.Rows = rows
        ds.Columns = columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = stack[k].tobytes()
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        info.sop_instance_uids.append(sop_uid)
        info.files.append(path)
    return info


@dataclass
class Contour:
    """One contour item as written: points (N, 3) LPS, or raw numbers to write verbatim."""

    points: np.ndarray | Sequence[float]
    geometric_type: str = "CLOSED_PLANAR"
    referenced_sop_uid: str | None = None  # ContourImageSequence; None leaves it out


def write_rtstruct(
    path: Path,
    series: SeriesInfo,
    rois: dict[str, Sequence[Contour | np.ndarray]],
    *,
    frame_of_reference_uid: str | None = None,
    referenced_series_uid: str | None = None,
    contour_image_hint: bool = True,
) -> Path:
    """An RTSTRUCT with one ROI per entry; numpy arrays become CLOSED_PLANAR contours.

    With `contour_image_hint` each contour whose plane matches a slice names that slice in
    ContourImageSequence (as OHIF and most TPS do); set it False to leave the hint out.
    """
    sop_uid = generate_uid()
    for_uid = frame_of_reference_uid or series.frame_of_reference_uid
    ds = Dataset()
    ds.file_meta = _meta(RTStructureSetStorage, sop_uid)
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_uid
    _patient_study(ds, series.study_uid)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "synthetic"
    ds.StructureSetDate = "20260101"
    ds.StructureSetTime = "000000"

    image_refs = DicomSequence()
    for uid in series.sop_instance_uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = CTImageStorage
        ref.ReferencedSOPInstanceUID = uid
        image_refs.append(ref)
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = referenced_series_uid or series.series_uid
    rt_series.ContourImageSequence = image_refs
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    rt_study.ReferencedSOPInstanceUID = series.study_uid
    rt_study.RTReferencedSeriesSequence = DicomSequence([rt_series])
    ref_for = Dataset()
    ref_for.FrameOfReferenceUID = for_uid
    ref_for.RTReferencedStudySequence = DicomSequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([ref_for])

    ds.StructureSetROISequence = DicomSequence()
    ds.ROIContourSequence = DicomSequence()
    ds.RTROIObservationsSequence = DicomSequence()
    distances = series.positions @ series.normal
    for number, (name, contours) in enumerate(rois.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = for_uid
        with warnings.catch_warnings():  # over-long or odd names are the point of some tests
            warnings.simplefilter("ignore")
            roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(roi)

        roi_contour = Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ROIDisplayColor = [255, 0, 0]
        items = DicomSequence()
        for contour in contours:
            if not isinstance(contour, Contour):
                contour = Contour(points=contour)
            flat = np.asarray(contour.points, float).ravel()
            item = Dataset()
            item.ContourGeometricType = contour.geometric_type
            item.NumberOfContourPoints = len(flat) // 3
            with warnings.catch_warnings():  # hostile values (NaN) are the point of some tests
                warnings.simplefilter("ignore")
                item.ContourData = [f"{v:.6g}" for v in flat]
            ref_uid = contour.referenced_sop_uid
            if ref_uid is None and contour_image_hint and len(flat) >= 3:
                d = float(flat[:3] @ series.normal)
                k = int(np.argmin(np.abs(distances - d)))
                if abs(distances[k] - d) < 1e-3:
                    ref_uid = series.sop_instance_uids[k]
            if ref_uid:
                ref = Dataset()
                ref.ReferencedSOPClassUID = CTImageStorage
                ref.ReferencedSOPInstanceUID = ref_uid
                item.ContourImageSequence = DicomSequence([ref])
            items.append(item)
        if items:
            roi_contour.ContourSequence = items
        ds.ROIContourSequence.append(roi_contour)

        obs = Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(obs)

    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def polygon_on_slice(
    series: SeriesInfo, k: int, corners_ij: Sequence[tuple[float, float]]
) -> np.ndarray:
    """A contour on slice k through the given (column, row) voxel coordinates, as LPS points."""
    return np.array([series.lps(i, j, k) for i, j in corners_ij])


def rectangle_on_slice(
    series: SeriesInfo, k: int, i0: float, j0: float, i1: float, j1: float
) -> np.ndarray:
    """Axis-aligned (in voxel space) rectangle contour on slice k."""
    return polygon_on_slice(series, k, [(i0, j0), (i1, j0), (i1, j1), (i0, j1)])
