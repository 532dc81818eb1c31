"""Masks in a series grid → DICOM RTSTRUCT, contours traced per slice in patient coordinates.

Our own writer rather than rt-utils: rt-utils loads the series itself, orders slices by z alone
and fills holes through "pin hole" cuts, which breaks oblique and sagittal series. Here contours
are traced with marching squares at the 0.5 level (``skimage.measure.find_contours``), so every
pixel centre of the mask lies strictly inside and every other centre strictly outside; holes
become separate contours, and a reader filling with the even-odd rule (as ``rtstruct.py`` and
OHIF do) recovers the mask. Only exactly collinear points are dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from skimage.measure import find_contours

from xnat_ml import __version__
from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.derived import save_atomically, source_header
from xnat_ml.imaging.series import Series

log = logging.getLogger(__name__)

DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # SOP class RT references use for studies
GENERATION_ALGORITHMS = ("AUTOMATIC", "SEMIAUTOMATIC", "MANUAL")
DEFAULT_COLOR = (255, 0, 0)
_CONTOUR_DATA = Tag(0x3006, 0x0050)

# Identity and study attributes copied from the source images, so viewers file the RTSTRUCT
# with the images it annotates.
_COPIED = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
    "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
    "StudyDescription",
)  # fmt: skip


def write_rtstruct(
    masks: Mapping[str, np.ndarray],
    series: Series,
    out_path: str | Path,
    colors: Mapping[str, tuple[int, int, int]] | None = None,
    label: str = "xnat-ml",
    *,
    roi_generation: str = "AUTOMATIC",
    series_description: str | None = None,
    instance_uid: str | None = None,
    series_uid: str | None = None,
) -> Path:
    """Write one RTSTRUCT with an ROI per mask (bool arrays of ``series.shape``), atomically.

    ``label`` becomes the StructureSetLabel (16 characters at most); ``roi_generation`` is
    MANUAL for annotations and AUTOMATIC (the default) for model output. Empty masks are left
    out with a warning: an ROI without contours is refused by most readers, ours included.
    SOP instance and series UIDs are new ones unless given (reproducible sample data).
    """
    if not masks:
        raise XnatMlError(f"RTSTRUCT {out_path}: no ROI masks to write")
    if roi_generation not in GENERATION_ALGORITHMS:
        raise XnatMlError(
            f"RTSTRUCT {out_path}: ROI generation {roi_generation!r} is not one of "
            f"{', '.join(GENERATION_ALGORITHMS)}"
        )
    for name, mask in masks.items():
        if not name.strip() or len(name) > 64:
            raise XnatMlError(f"RTSTRUCT {out_path}: ROI name {name!r} is empty or over 64 chars")
        if np.shape(mask) != series.shape:
            raise XnatMlError(
                f"ROI {name!r}: mask shape {np.shape(mask)} does not match series grid "
                f"{series.shape}"
            )
    empty = [name for name, mask in masks.items() if not np.any(mask)]
    for name in empty:
        log.warning("RTSTRUCT %s: ROI %r has an empty mask, left out", out_path, name)
    masks = {name: mask for name, mask in masks.items() if name not in empty}
    if not masks:
        raise XnatMlError(f"RTSTRUCT {out_path}: every ROI mask is empty, nothing to write")
    source = source_header(series.files[0])
    ds = _base_dataset(source, series, label, series_description, instance_uid, series_uid)
    ds.ReferencedFrameOfReferenceSequence = Sequence([_frame_reference(source, series)])
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    colors = colors or {}
    for number, (name, mask) in enumerate(masks.items(), start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = roi_generation
        ds.StructureSetROISequence.append(roi)

        contours = Dataset()
        contours.ROIDisplayColor = list(colors.get(name, DEFAULT_COLOR))
        contours.ReferencedROINumber = number
        contours.ContourSequence = Sequence(
            _contour_item(points, _image_ref(source.SOPClassUID, series.sop_instance_uids[k]))
            for k, points in trace_contours(mask, series)
        )
        ds.ROIContourSequence.append(contours)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = ""
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    return save_atomically(ds, out_path)


def trace_contours(mask: np.ndarray, series: Series) -> list[tuple[int, np.ndarray]]:
    """Closed planar contours of ``mask`` as ``(slice k, (N, 3) LPS points)``, holes included."""
    mask = np.asarray(mask, dtype=bool)
    lps = series.lps_affine
    out = []
    # Two passes over the volume give every slice's bounding box (per-slice reductions over
    # strided planes cost several times more).
    i_any, j_any = mask.any(axis=1), mask.any(axis=0)  # (I, K) and (J, K)
    for k in np.flatnonzero(i_any.any(axis=0)):
        i_used, j_used = np.flatnonzero(i_any[:, k]), np.flatnonzero(j_any[:, k])
        i0, j0 = i_used[0], j_used[0]
        # The mask's bounding box on this slice, padded so contours at its border close too.
        crop = np.pad(mask[i0 : i_used[-1] + 1, j0 : j_used[-1] + 1, k], 1).astype(np.float64)
        for contour in find_contours(crop, 0.5):
            # closed: the last point repeats the first; shift back from crop to grid indices
            contour = _corners(contour[:-1]) + (i0 - 1.0, j0 - 1.0)
            ijk = np.column_stack([contour, np.full(len(contour), float(k))])
            out.append((int(k), ijk @ lps[:3, :3].T + lps[:3, 3]))
    return out


def _corners(points: np.ndarray) -> np.ndarray:
    """Drop the points of a closed polygon that lie straight between their neighbours.

    Marching squares puts a point on every pixel edge crossed; on a binary mask the coordinates
    are exact halves, so exact collinearity (zero cross product, forward direction) is safe.
    """
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    straight = (np.abs(cross) < 1e-9) & (np.einsum("ij,ij->i", before, after) > 0)
    return points if straight.all() else points[~straight]


def _base_dataset(
    source: Dataset,
    series: Series,
    label: str,
    series_description: str | None,
    instance_uid: str | None,
    series_uid: str | None,
) -> Dataset:
    now = dt.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in _COPIED:
        setattr(ds, keyword, source.get(keyword, ""))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SeriesNumber = 9000 + int(source.get("SeriesNumber", 0) or 0) % 1000
    ds.SeriesDescription = series_description or label
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.Manufacturer = "xnat-ml"
    ds.SoftwareVersions = __version__
    ds.OperatorsName = ""
    ds.ContentDate = ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.ContentTime = ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    ds.StructureSetLabel = label[:16]
    ds.StructureSetName = label[:64]
    return ds


def _image_ref(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = sop_class_uid
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    return ref


def _frame_reference(source: Dataset, series: Series) -> Dataset:
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = series.series_uid
    series_ref.ContourImageSequence = Sequence(
        _image_ref(source.SOPClassUID, uid) for uid in series.sop_instance_uids
    )
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = source.get("StudyInstanceUID", "")
    study_ref.RTReferencedSeriesSequence = Sequence([series_ref])
    frame = Dataset()
    frame.FrameOfReferenceUID = series.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([study_ref])
    return frame


def _contour_item(points: np.ndarray, image_ref: Dataset) -> Dataset:
    item = Dataset()
    item.ContourImageSequence = Sequence([image_ref])
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points)
    # 8 significant digits fit DS's 16 characters and keep ~1e-5 mm at 1 m from the origin.
    # Stored as the encoded value: pydicom would otherwise build (and validate) one DS object
    # per number, the bulk of the writing time for large masks.
    text = "\\".join(f"{v:.8g}" for v in points.ravel()).encode("ascii")
    if len(text) % 2:
        text += b" "
    item[_CONTOUR_DATA] = RawDataElement(_CONTOUR_DATA, "DS", len(text), text, 0, False, True)
    # Declared as already encoded (explicit VR little endian, the default character set of a new
    # item), so the writer copies the bytes instead of decoding and re-encoding them.
    item.set_original_encoding(False, True, default_encoding)
    return item
