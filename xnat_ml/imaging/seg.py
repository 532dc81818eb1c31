"""DICOM SEG → one boolean mask per segment, in exactly the grid of the series it annotates.

Frames are placed by geometry: every frame's plane position must fall on a slice of the series
(same frame of reference, orientation, pixel spacing and size, in-plane offset zero), and
highdicom's volume is then matched to the series grid without resampling. References to source
instances are checked too: a frame naming an instance the series lacks, or a different slice
than the one it lies on, means the SEG belongs to other images, and using it would put labels
on the wrong voxels. When highdicom cannot build a regular volume from the frames alone (a
sparse stack without SpacingBetweenSlices looks coarser than the series), frames are placed by
their source-instance references, which the checks above have proven to agree with geometry.

FRACTIONAL segments are binarised at 0.5 (a voxel belongs to the segment when its fraction,
probability or occupancy, is at least one half). LABELMAP segmentations are read where highdicom
reads them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.series import Series

log = logging.getLogger(__name__)

FRACTION_THRESHOLD = 0.5
POSITION_TOL = 0.05  # voxels: how far a frame origin may sit from a slice's voxel (0, 0, k)
ORIENTATION_TOL = 1e-3  # direction cosines
SPACING_REL_TOL = 1e-3


def read_seg(path: str | Path, series: Series) -> dict[str, np.ndarray]:
    """Masks (bool, ``series.shape``) keyed by SegmentLabel, in segment number order.

    A label used by several segments gets ``_<segment number>`` appended after its first use.
    """
    path = Path(path)
    seg = _open(path)
    where = f"SEG {path}"
    _check_frame_of_reference(seg, series, where)
    _check_referenced_series(seg, series, where)
    slices = _frame_slices(seg, series, where)
    _check_frame_references(seg, series, slices, where)

    numbers = list(seg.segment_numbers)
    if not numbers:
        raise XnatMlError(f"{where}: describes no segments")
    try:
        stack = _by_geometry(seg, series, numbers)
    except Exception as exc:  # highdicom/pydicom decoding failures come in many types
        raise XnatMlError(f"{where}: cannot decode segmentation frames ({exc})") from exc

    if seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL:
        masks_kji = stack >= FRACTION_THRESHOLD
    else:
        masks_kji = stack > 0
    out: dict[str, np.ndarray] = {}
    for channel, number in enumerate(numbers):
        label = str(seg.get_segment_description(number).SegmentLabel or "").strip()
        name = label or f"segment_{number}"
        if name in out:
            name = f"{name}_{number}"
        # highdicom's (slice, row, column) → our (column i, row j, slice k)
        out[name] = np.ascontiguousarray(masks_kji[..., channel].transpose(2, 1, 0))
    return out


def _open(path: Path) -> hd.seg.Segmentation:
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise XnatMlError(f"SEG {path}: not a DICOM file") from None
    except OSError as exc:
        raise XnatMlError(f"SEG {path}: cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # truncated or corrupt files: pydicom raises assorted types
        raise XnatMlError(f"SEG {path}: unreadable DICOM ({exc})") from exc
    modality = ds.get("Modality")
    if modality != "SEG":
        raise XnatMlError(f"SEG {path}: not a segmentation (Modality {modality!r})")
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except Exception as exc:  # highdicom validates many attributes, raising several types
        raise XnatMlError(f"SEG {path}: malformed segmentation ({exc})") from exc


def _check_frame_of_reference(seg: hd.seg.Segmentation, series: Series, where: str) -> None:
    uid = seg.get("FrameOfReferenceUID")
    if not uid:
        raise XnatMlError(f"{where}: has no frame of reference, cannot be placed on a series")
    if uid != series.frame_of_reference_uid:
        raise XnatMlError(
            f"{where}: frame of reference {uid} differs from series {series.series_uid} "
            f"({series.frame_of_reference_uid})"
        )


def _check_referenced_series(seg: hd.seg.Segmentation, series: Series, where: str) -> None:
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    if referenced and series.series_uid not in referenced:
        raise XnatMlError(
            f"{where}: references series {', '.join(referenced)}, not {series.series_uid}"
        )


def _frame_slices(seg: hd.seg.Segmentation, series: Series, where: str) -> list[int]:
    """Slice index k of every frame, from its plane position."""
    shared = (
        seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else {}
    )
    if (int(seg.Rows), int(seg.Columns)) != (series.rows, series.columns):
        raise XnatMlError(
            f"{where}: frames are {seg.Rows}x{seg.Columns} pixels, series {series.series_uid} "
            f"has {series.rows}x{series.columns}"
        )
    slices: list[int] = []
    for number, group in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        orientation = _group_value(
            group, shared, "PlaneOrientationSequence", "ImageOrientationPatient"
        )
        spacing = _group_value(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        position = _group_value(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        if position is None:  # highdicom requires positions with a frame of reference
            raise XnatMlError(f"{where}: frame {number} has no plane position")
        if orientation is not None:
            expected = np.concatenate([series.row_cosine, series.column_cosine])
            if np.max(np.abs(np.asarray(orientation, float) - expected)) > ORIENTATION_TOL:
                raise XnatMlError(
                    f"{where}: frame {number} orientation differs from series {series.series_uid}"
                )
        if spacing is not None and not np.allclose(
            np.asarray(spacing, float), series.pixel_spacing, rtol=SPACING_REL_TOL
        ):
            raise XnatMlError(
                f"{where}: frame {number} pixel spacing {list(spacing)} differs from series "
                f"{series.series_uid} ({list(series.pixel_spacing)})"
            )
        i, j, k = series.patient_to_voxel(np.asarray(position, float))[0]
        slice_k = int(round(k))
        if (
            abs(i) > POSITION_TOL
            or abs(j) > POSITION_TOL
            or abs(k - slice_k) > POSITION_TOL
            or not 0 <= slice_k < series.shape[2]
        ):
            raise XnatMlError(
                f"{where}: frame {number} lies off the slices of series {series.series_uid} "
                f"(voxel position {i:.2f}, {j:.2f}, {k:.2f})"
            )
        slices.append(slice_k)
    return slices


def _group_value(group, shared, sequence: str, keyword: str):
    """A functional-group attribute, per-frame first, then shared; None when absent."""
    for source in (group, shared):
        items = source.get(sequence) if source else None
        if items and keyword in items[0]:
            return items[0][keyword].value
    return None


def _check_frame_references(
    seg: hd.seg.Segmentation, series: Series, slices: list[int], where: str
) -> None:
    index = {uid: k for k, uid in enumerate(series.sop_instance_uids)}
    missing: set[str] = set()
    for number, (group, slice_k) in enumerate(
        zip(seg.PerFrameFunctionalGroupsSequence, slices, strict=True), start=1
    ):
        refs = [
            str(source.ReferencedSOPInstanceUID)
            for derivation in group.get("DerivationImageSequence", [])
            for source in derivation.get("SourceImageSequence", [])
            if "ReferencedSOPInstanceUID" in source
        ]
        for uid in refs:
            if uid not in index:
                missing.add(uid)
            elif index[uid] != slice_k:
                raise XnatMlError(
                    f"{where}: frame {number} references slice {index[uid]} of series "
                    f"{series.series_uid} but lies on slice {slice_k}"
                )
    if missing:
        raise XnatMlError(
            f"{where}: frames reference {len(missing)} instance(s) missing from series "
            f"{series.series_uid}, e.g. {sorted(missing)[0]}"
        )


def _series_geometry(series: Series) -> hd.VolumeGeometry:
    # highdicom indexes (slice, row, column); our affine indexes (column, row, slice).
    return hd.VolumeGeometry(
        series.lps_affine[:, [2, 1, 0, 3]],
        (series.shape[2], series.shape[1], series.shape[0]),
        "PATIENT",
        series.frame_of_reference_uid,
    )


def _by_geometry(seg: hd.seg.Segmentation, series: Series, numbers: list[int]) -> np.ndarray:
    """(K, rows, columns, segments) placed by plane positions."""
    target = _series_geometry(series)
    try:
        volume = seg.get_volume(segment_numbers=numbers, rescale_fractional=True)
        matched = volume.match_geometry(target, tol=POSITION_TOL)
    except (RuntimeError, ValueError) as exc:
        log.debug("SEG volume not matched by geometry (%s); placing frames by references", exc)
        return _by_references(seg, series, numbers)
    return matched.array


def _by_references(seg: hd.seg.Segmentation, series: Series, numbers: list[int]) -> np.ndarray:
    """(K, rows, columns, segments) placed by each frame's source instance."""
    return seg.get_pixels_by_source_instance(
        list(series.sop_instance_uids),
        segment_numbers=numbers,
        assert_missing_frames_are_empty=True,
        ignore_spatial_locations=True,
        rescale_fractional=True,
    )
