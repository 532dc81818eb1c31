"""RTSTRUCT → one binary mask per ROI, in exactly the voxel grid of the referenced series.

Semantics, chosen where converters in the field differ:

* Contours are matched to slices by geometry alone: each contour is mapped into the series'
  voxel space and must lie, within ``plane_tolerance`` (default a quarter of the slice spacing),
  on a slice plane. ContourImageSequence is only a hint; a disagreeing hint is reported, a
  missing one is fine. Contours on no slice (between slices, beyond the stack, or not parallel
  to the slices) or entirely outside the image are counted and reported, never snapped.
* CLOSED_PLANAR contours of one ROI on one slice are combined with the even-odd rule (XOR), so
  a contour inside another is a hole. POINT and OPEN_* contours are skipped with a warning.
* A voxel belongs to the ROI when its centre lies inside the even-odd region or on a contour
  line (the region's closure): contours traced through pixel centres keep their border pixels.
* Malformed input (no ROIs, an ROI with nothing to draw, contours with fewer than 3 points,
  ContourData not a list of x/y/z triplets, non-finite or absurd coordinates, another frame of
  reference or series) is refused with an XnatMlError naming the ROI and the problem.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import RTStructureSetStorage

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.series import Series

log = logging.getLogger(__name__)

DEFAULT_PLANE_TOLERANCE = 0.25  # fraction of the slice spacing
ABSURD_DISTANCE_MM = 1000.0  # a point this far outside the image volume is not a real contour
# A pixel centre this close (in voxels) to a contour line is on it: ContourData is decimal text
# (16 characters at most), so a line traced through pixel centres misses them by ~1e-5 voxel.
ON_CONTOUR_TOL = 1e-3
_CONTOUR_DATA = 0x30060050
_GEOMETRIC_TYPE = 0x30060042
_CONTOUR_IMAGE_SEQUENCE = 0x30060016

SKIP_REASONS = {
    "point": "POINT contours (not areas)",
    "open": "OPEN_PLANAR/OPEN_NONPLANAR contours (not closed)",
    "off_plane": "contours lying on no slice plane of the series",
    "not_parallel": "contours not parallel to the slices",
    "outside": "contours on a slice plane but entirely outside the image",
    "clipped": "contours partly outside the image (clipped at its edge)",
    "hint_mismatch": "contours whose ContourImageSequence names another slice (geometry used)",
}


@dataclass(eq=False)
class RoiMask:
    """One ROI: the contours placed on slices, what was skipped, and the mask (drawn lazily, so
    that several ROIs can be drawn and written in parallel)."""

    number: int
    name: str
    shape: tuple[int, int, int]
    planes: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (k, (N, 2) i/j)
    counts: Counter[str] = field(default_factory=Counter)  # keys of SKIP_REASONS

    @property
    def contours_used(self) -> int:
        return len(self.planes)

    @cached_property
    def mask(self) -> np.ndarray | None:
        """uint8 0/1 of the series shape; None when there is nothing to draw."""
        return rasterise(self.planes, self.shape) if self.planes else None

    @property
    def voxels(self) -> int:
        return 0 if self.mask is None else int(np.count_nonzero(self.mask))


class _MaskView(Mapping[str, np.ndarray]):
    """Name → mask, rasterising each ROI on first access."""

    def __init__(self, rois: dict[str, RoiMask]) -> None:
        self._rois = rois

    def __getitem__(self, name: str) -> np.ndarray:
        return self._rois[name].mask  # type: ignore[return-value]

    def __iter__(self) -> Iterator[str]:
        return iter(self._rois)

    def __len__(self) -> int:
        return len(self._rois)


@dataclass
class RtstructMasks:
    """All ROIs of one RTSTRUCT placed on one series."""

    path: Path
    series: Series
    rois: list[RoiMask]
    warnings: list[str]

    def masks(self) -> Mapping[str, np.ndarray]:
        """ROI name → mask for every drawable ROI (duplicate names get their ROI number)."""
        seen = Counter(roi.name for roi in self.rois)
        return _MaskView(
            {
                (roi.name if seen[roi.name] == 1 else f"{roi.name} [ROI {roi.number}]"): roi
                for roi in self.rois
                if roi.planes
            }
        )

    def report(self) -> dict[str, Any]:
        return {
            "rtstruct": str(self.path),
            "series_uid": self.series.series_uid,
            "frame_of_reference_uid": self.series.frame_of_reference_uid,
            "grid_shape": list(self.series.shape),
            "rois": [
                {
                    "number": roi.number,
                    "name": roi.name,
                    "voxels": roi.voxels,
                    "contours_used": roi.contours_used,
                    **{key: roi.counts[key] for key in SKIP_REASONS if roi.counts[key]},
                }
                for roi in self.rois
            ],
            "warnings": self.warnings,
        }


@dataclass(frozen=True)
class RtstructHeader:
    """What an RTSTRUCT says it refers to; cheap to read before choosing a series."""

    path: Path
    dataset: pydicom.Dataset
    frame_of_reference_uids: frozenset[str]
    referenced_series_uids: frozenset[str]


def read_rtstruct(path: str | Path) -> RtstructHeader:
    """Open an RTSTRUCT (contour data stays raw until rasterised) and collect its references."""
    path = Path(path)
    if not path.is_file():
        raise XnatMlError(f"RTSTRUCT {path}: no such file")
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise XnatMlError(f"RTSTRUCT {path}: not a DICOM file") from None
    except Exception as exc:  # corrupt DICOM: pydicom raises assorted types
        raise XnatMlError(f"RTSTRUCT {path}: unreadable DICOM ({exc})") from None
    sop_class = ds.get("SOPClassUID") or getattr(ds, "file_meta", {}).get("MediaStorageSOPClassUID")
    if sop_class != RTStructureSetStorage:
        what = ds.get("Modality") or sop_class or "no SOP class (truncated?)"
        raise XnatMlError(f"RTSTRUCT {path}: not an RT Structure Set ({what})")
    try:
        fors = {
            str(item.FrameOfReferenceUID)
            for item in ds.get("ReferencedFrameOfReferenceSequence", [])
            if "FrameOfReferenceUID" in item
        }
        series_uids = {
            str(series.SeriesInstanceUID)
            for ref_for in ds.get("ReferencedFrameOfReferenceSequence", [])
            for study in ref_for.get("RTReferencedStudySequence", [])
            for series in study.get("RTReferencedSeriesSequence", [])
            if "SeriesInstanceUID" in series
        }
    except Exception as exc:  # truncated nested sequences surface here
        raise XnatMlError(f"RTSTRUCT {path}: malformed references ({exc})") from None
    return RtstructHeader(path, ds, frozenset(fors), frozenset(series_uids))


def rtstruct_to_masks(
    rtstruct: str | Path | RtstructHeader,
    series: Series,
    *,
    plane_tolerance: float = DEFAULT_PLANE_TOLERANCE,
    skip_empty: bool = False,
) -> RtstructMasks:
    """Place every ROI's contours on the slices of `series`; masks are drawn on first access.

    All checks happen here, before any mask is drawn. `plane_tolerance` is a fraction of the
    slice spacing. With `skip_empty`, ROIs with nothing to draw are reported and left out
    instead of failing the conversion.
    """
    if not 0 < plane_tolerance <= 0.5:
        raise XnatMlError(
            f"plane tolerance {plane_tolerance}: must be in (0, 0.5] (a fraction of the slice "
            "spacing; above 0.5 a contour would lie near two slices)"
        )
    header = rtstruct if isinstance(rtstruct, RtstructHeader) else read_rtstruct(rtstruct)
    path, ds = header.path, header.dataset
    _check_references(header, series)
    rois = _roi_table(path, ds, series)
    warnings: list[str] = []
    bounds = _absurd_bounds(series)
    try:
        contour_items = list(ds.get("ROIContourSequence", []))
    except Exception as exc:
        raise XnatMlError(f"RTSTRUCT {path}: malformed ROIContourSequence ({exc})") from None
    for item in contour_items:
        number = _int(item.get("ReferencedROINumber"), f"RTSTRUCT {path}: ROIContourSequence")
        if number not in rois:
            raise XnatMlError(f"RTSTRUCT {path}: contours refer to undefined ROI number {number}")
        roi = rois[number]
        _collect_planes(path, roi, item, series, plane_tolerance, bounds)
    for roi in rois.values():
        for key, text in SKIP_REASONS.items():
            if roi.counts[key]:
                warnings.append(f"ROI {roi.name!r}: {roi.counts[key]} {text}")
        if not roi.planes:
            problem = f"RTSTRUCT {path}: ROI {roi.name!r} has no closed contour on any slice"
            if not skip_empty:
                raise XnatMlError(problem)
            warnings.append(problem + " (skipped)")
    for text in warnings:
        log.warning("%s", text)
    return RtstructMasks(path, series, list(rois.values()), warnings)


def _check_references(header: RtstructHeader, series: Series) -> None:
    where = f"RTSTRUCT {header.path}"
    fors, uids = header.frame_of_reference_uids, header.referenced_series_uids
    if fors and series.frame_of_reference_uid not in fors:
        raise XnatMlError(
            f"{where}: frame of reference {', '.join(sorted(fors))} does not match "
            f"series {series.series_uid} (frame of reference {series.frame_of_reference_uid})"
        )
    if uids and series.series_uid not in uids:
        raise XnatMlError(
            f"{where}: refers to series {', '.join(sorted(uids))}, not {series.series_uid}"
        )


def _roi_table(path: Path, ds: pydicom.Dataset, series: Series) -> dict[int, RoiMask]:
    rois: dict[int, RoiMask] = {}
    for item in ds.get("StructureSetROISequence", []):
        number = _int(item.get("ROINumber"), f"RTSTRUCT {path}: StructureSetROISequence")
        if number in rois:
            raise XnatMlError(f"RTSTRUCT {path}: ROI number {number} defined twice")
        name = str(item.get("ROIName") or f"ROI_{number}")
        roi_for = str(item.get("ReferencedFrameOfReferenceUID") or "")
        if roi_for and roi_for != series.frame_of_reference_uid:
            raise XnatMlError(
                f"RTSTRUCT {path}: ROI {name!r} lies in frame of reference {roi_for}, not the "
                f"series' {series.frame_of_reference_uid}"
            )
        rois[number] = RoiMask(number=number, name=name, shape=series.shape)
    if not rois:
        raise XnatMlError(f"RTSTRUCT {path}: defines no ROIs")
    return rois


def _int(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise XnatMlError(f"{where}: missing or non-integer ROI number {value!r}") from None


def _absurd_bounds(series: Series) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float)
    corners *= np.array(series.shape) - 1
    lps = corners @ series.lps_affine[:3, :3].T + series.lps_affine[:3, 3]
    return lps.min(axis=0) - ABSURD_DISTANCE_MM, lps.max(axis=0) + ABSURD_DISTANCE_MM


def _contour_points(path: Path, roi: RoiMask, index: int, item: pydicom.Dataset) -> np.ndarray:
    """ContourData as (N, 3) floats, parsed from the raw bytes (pydicom's DS objects are slow)."""
    where = f"RTSTRUCT {path}: ROI {roi.name!r} contour {index + 1}"
    element = item.get_item(_CONTOUR_DATA)
    value = None if element is None else element.value
    if value is None or (hasattr(value, "__len__") and len(value) == 0):
        raise XnatMlError(f"{where}: has no ContourData")
    try:
        if isinstance(value, bytes):
            numbers = np.array(value.split(b"\\"), dtype=np.float64)
        else:  # already converted (a dataset built in memory)
            numbers = np.array(list(value) if not isinstance(value, float) else [value], float)
    except ValueError:
        raise XnatMlError(f"{where}: ContourData holds non-numeric values") from None
    if numbers.size % 3:
        raise XnatMlError(
            f"{where}: ContourData has {numbers.size} values, not a multiple of 3 (x/y/z)"
        )
    if not np.all(np.isfinite(numbers)):
        raise XnatMlError(f"{where}: ContourData holds NaN or infinite coordinates")
    return numbers.reshape(-1, 3)


def _collect_planes(
    path: Path,
    roi: RoiMask,
    roi_contour: pydicom.Dataset,
    series: Series,
    plane_tolerance: float,
    bounds: tuple[np.ndarray, np.ndarray],
) -> None:
    """Add (slice k, (N, 2) polygon in (i, j) voxel coordinates) to `roi` for every usable
    contour; count the others."""
    try:
        items = list(roi_contour.get("ContourSequence", []))
    except Exception as exc:
        where = f"RTSTRUCT {path}: ROI {roi.name!r}"
        raise XnatMlError(f"{where}: malformed contours ({exc})") from None
    n_slices = series.shape[2]
    extent = np.array(series.shape[:2]) - 0.5  # image edges in (i, j)
    for index, item in enumerate(items):
        kind = _raw_text(item, _GEOMETRIC_TYPE) or "CLOSED_PLANAR"
        if kind == "POINT":
            roi.counts["point"] += 1
            continue
        if kind.startswith("OPEN"):
            roi.counts["open"] += 1
            continue
        where = f"RTSTRUCT {path}: ROI {roi.name!r} contour {index + 1}"
        if kind != "CLOSED_PLANAR":
            raise XnatMlError(f"{where}: unknown ContourGeometricType {kind!r}")
        points = _contour_points(path, roi, index, item)
        if len(points) < 3:
            raise XnatMlError(
                f"{where}: a closed contour needs 3 points or more, not {len(points)}"
            )
        low, high = bounds
        if np.any(points < low) or np.any(points > high):
            raise XnatMlError(
                f"{where}: coordinates lie more than {ABSURD_DISTANCE_MM:g} mm outside the image"
                " volume (wrong units or corrupt data)"
            )
        voxels = series.patient_to_voxel(points)
        ks = voxels[:, 2]
        if np.ptp(ks) > 2 * plane_tolerance:
            roi.counts["not_parallel"] += 1
            continue
        k_mean = float(ks.mean())
        k = round(k_mean)
        if abs(k - k_mean) > plane_tolerance or not 0 <= k < n_slices:
            roi.counts["off_plane"] += 1
            continue
        low_ij, high_ij = voxels[:, :2].min(axis=0), voxels[:, :2].max(axis=0)
        if np.any(high_ij < -0.5) or np.any(low_ij > extent):
            roi.counts["outside"] += 1
            continue
        if np.any(low_ij < -0.5) or np.any(high_ij > extent):
            roi.counts["clipped"] += 1
        if _hint_disagrees(item, series.sop_instance_uids[k]):
            roi.counts["hint_mismatch"] += 1
        roi.planes.append((k, voxels[:, :2]))


def _raw_text(item: pydicom.Dataset, tag: int) -> str:
    """A short text value, read from the raw element without pydicom's value conversion."""
    element = item.get_item(tag)
    if element is None or element.value is None:
        return ""
    value = element.value
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return text.strip(" \0").upper()


def _hint_disagrees(item: pydicom.Dataset, sop_instance_uid: str) -> bool:
    """True when ContourImageSequence names an image other than the slice the contour lies on.

    The raw sequence bytes are searched for the slice's UID: building a dataset per contour
    just to read one reference would cost more than the rest of the parsing.
    """
    element = item.get_item(_CONTOUR_IMAGE_SEQUENCE)
    if element is None or not element.value:
        return False
    if isinstance(element.value, bytes):
        return sop_instance_uid.encode() not in element.value
    uids = {str(ref.get("ReferencedSOPInstanceUID", "")) for ref in element.value}
    return sop_instance_uid not in uids


def rasterise(planes: list[tuple[int, np.ndarray]], shape: tuple[int, int, int]) -> np.ndarray:
    """Even-odd fill of polygons given as (slice k, (N, 2) (i, j) vertices), plus their outlines.

    A scanline fill vectorised over all edges of all slices at once: every edge crossing of a
    pixel-centre row toggles the parity of all pixels to its right (a bincount and a cumulative
    sum), so overlapping contours XOR by construction. Returns uint8 0/1 of `shape` in NIfTI
    order (i, j, k), laid out in Fortran order so that writing it needs no copy.
    """
    n_cols, n_rows, n_slices = shape
    volume = np.zeros((n_slices, n_rows, n_cols), dtype=np.uint8)  # C order (k, j, i)
    starts = np.cumsum([0] + [len(poly) for _, poly in planes])
    vertices = np.concatenate([poly for _, poly in planes])
    nxt = np.arange(len(vertices)) + 1
    nxt[starts[1:] - 1] = starts[:-1]  # close each polygon
    edge_k = np.repeat([k for k, _ in planes], np.diff(starts))
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = vertices[nxt, 0], vertices[nxt, 1]

    # Rows j with min(y0, y1) <= j < max(y0, y1): the half-open rule counts a vertex once.
    lo = np.maximum(np.ceil(np.minimum(y0, y1)), 0).astype(np.int64)
    hi = np.minimum(np.ceil(np.maximum(y0, y1)) - 1, n_rows - 1).astype(np.int64)
    counts = np.maximum(hi - lo + 1, 0)
    edges = np.repeat(np.arange(len(vertices)), counts)
    if edges.size:
        offsets = np.arange(edges.size) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = lo[edges] + offsets
        slope = (x1 - x0)[edges] / (y1 - y0)[edges]
        xs = x0[edges] + (rows - y0[edges]) * slope
        # Pixel i is inside when an odd number of crossings lie strictly left of its centre.
        first = np.clip(np.floor(xs).astype(np.int64) + 1, 0, n_cols)
        ks = edge_k[edges]
        # Work in the bounding box of the crossings; right of the last one parity is even.
        k0, r0, c0 = ks.min(), rows.min(), first.min()
        box = (ks.max() - k0 + 1, rows.max() - r0 + 1, first.max() - c0 + 1)
        flat = ((ks - k0) * box[1] + (rows - r0)) * box[2] + (first - c0)
        cells, hits = np.unique(flat, return_counts=True)
        toggles = np.zeros(box, dtype=np.uint8)
        toggles.ravel()[cells[hits % 2 == 1]] = 1
        parity = np.cumsum(toggles, axis=2, dtype=np.uint8) & 1  # uint8 wraps mod 256: parity kept
        c1 = min(c0 + box[2], n_cols)
        volume[k0 : k0 + box[0], r0 : r0 + box[1], c0:c1] = parity[..., : c1 - c0]
    _draw_outlines(volume, edge_k, x0, y0, x1, y1)
    return volume.T


def _draw_outlines(
    volume: np.ndarray,
    edge_k: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
) -> None:
    """Set pixels whose centre lies on an edge (within ON_CONTOUR_TOL): samples every half voxel
    along each edge, rounded to the nearest centre, kept when that centre is on the segment."""
    n_slices, n_rows, n_cols = volume.shape
    dx, dy = x1 - x0, y1 - y0
    steps = (2 * np.ceil(np.maximum(np.abs(dx), np.abs(dy))) + 1).astype(np.int64)
    edges = np.repeat(np.arange(len(x0)), steps + 1)
    t = (np.arange(edges.size) - np.repeat(np.cumsum(steps + 1) - steps - 1, steps + 1)) / steps[
        edges
    ]
    ci = np.rint(x0[edges] + t * dx[edges])
    cj = np.rint(y0[edges] + t * dy[edges])
    # Distance of the candidate centre from the segment (projection clamped to the ends).
    length2 = dx[edges] ** 2 + dy[edges] ** 2
    u = np.where(
        length2 > 0,
        ((ci - x0[edges]) * dx[edges] + (cj - y0[edges]) * dy[edges]) / np.maximum(length2, 1e-300),
        0.0,
    )
    u = np.clip(u, 0.0, 1.0)
    dist2 = (x0[edges] + u * dx[edges] - ci) ** 2 + (y0[edges] + u * dy[edges] - cj) ** 2
    keep = (dist2 <= ON_CONTOUR_TOL**2) & (ci >= 0) & (ci < n_cols) & (cj >= 0) & (cj < n_rows)
    volume[edge_k[edges][keep], cj[keep].astype(np.int64), ci[keep].astype(np.int64)] = 1
