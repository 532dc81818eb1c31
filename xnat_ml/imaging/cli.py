"""`xnat-ml convert series|rtstruct|seg|labels`: DICOM to NIfTI and label NIfTI back to DICOM.

Files only: no XNAT, no network.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from xnat_ml.errors import XnatMlError
from xnat_ml.imaging.filenames import NAMING_RULE

if TYPE_CHECKING:
    from xnat_ml.imaging.series import Series

# pydicom, nibabel and highdicom are imported inside the handlers: `xnat-ml` registers every
# verb module before dispatching, and the other verbs should not pay for loading them.

GRID_NOTE = (
    "Masks are uint8 0/1 NIfTIs in exactly the grid (shape and affine) that "
    "`xnat-ml convert series` writes for the same series."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert",
        help="convert a DICOM series, RTSTRUCT or SEG to NIfTI",
        description="Convert DICOM files to NIfTI: no XNAT, no network.",
    )
    kinds = convert.add_subparsers(dest="convert_kind", metavar="KIND", required=True)

    series = kinds.add_parser(
        "series",
        help="one DICOM image series → image NIfTI",
        description=(
            "Write one DICOM series as NIfTI. Slices are ordered by position along the slice "
            "normal (not file name or InstanceNumber); oblique, non-square and anisotropic "
            "series are kept as they are. Uneven slice spacing and gantry tilt are refused "
            "(no resampling). Rescale slope/intercept are applied."
        ),
    )
    series.add_argument("series_dir", metavar="SERIES_DIR", type=Path, help="folder of slices")
    series.add_argument("--out", required=True, type=Path, help="output .nii or .nii.gz")
    _series_uid_option(series)
    series.set_defaults(func=_convert_series)

    rtstruct = kinds.add_parser(
        "rtstruct",
        help="RTSTRUCT → one mask NIfTI per ROI",
        description=(
            "Rasterise every ROI of an RTSTRUCT on the series it annotates: OUT_DIR/<ROI>.nii.gz "
            "per ROI and OUT_DIR/masks.json (ROI name → file, contours used and skipped). "
            "Closed contours on one slice combine by the even-odd rule (holes stay holes); "
            "contours are placed on slices by geometry. " + GRID_NOTE
        ),
        epilog=f"File names: {NAMING_RULE}.",
    )
    rtstruct.add_argument("rtstruct", metavar="RTSTRUCT", type=Path, help="RTSTRUCT file")
    _mask_options(rtstruct)
    rtstruct.add_argument(
        "--plane-tolerance",
        type=float,
        metavar="FRACTION",
        help="how far (fraction of the slice spacing) a contour may lie from a slice plane "
        "(default: a quarter)",
    )
    rtstruct.add_argument(
        "--skip-empty",
        action="store_true",
        help="report and skip ROIs with no closed contour on the series instead of failing",
    )
    rtstruct.set_defaults(func=_convert_rtstruct)

    seg = kinds.add_parser(
        "seg",
        help="DICOM SEG → one mask NIfTI per segment",
        description=(
            "Write every segment of a DICOM SEG (BINARY, FRACTIONAL at 0.5, LABELMAP) as "
            "OUT_DIR/<SegmentLabel>.nii.gz plus OUT_DIR/masks.json. " + GRID_NOTE
        ),
        epilog=f"File names: {NAMING_RULE}.",
    )
    seg.add_argument("seg", metavar="SEG", type=Path, help="DICOM SEG file")
    _mask_options(seg)
    seg.set_defaults(func=_convert_seg)

    labels = kinds.add_parser(
        "labels",
        help="label NIfTI (model output) → DICOM SEG or RTSTRUCT",
        description=(
            "Write a label NIfTI in the series grid (or an axis permutation/flip of it; never "
            "resampled) as a DICOM SEG or RTSTRUCT referencing the series, segments or ROIs named "
            "and coloured by the label map, so that OHIF shows it. Values missing from the label "
            "map are refused."
        ),
    )
    labels.add_argument("labels", metavar="LABELS", type=Path, help="label .nii/.nii.gz")
    labels.add_argument(
        "--series", required=True, type=Path, metavar="SERIES_DIR", help="the source series"
    )
    labels.add_argument(
        "--labelmap", required=True, type=Path, metavar="FILE",
        help="label map (region2MaskValueMap.txt or JSON) naming the values",
    )  # fmt: skip
    labels.add_argument("--to", required=True, choices=("seg", "rtstruct"), help="DICOM object")
    labels.add_argument("--out", required=True, type=Path, metavar="FILE", help="output .dcm")
    labels.add_argument(
        "--algorithm", default="xnat-ml", help="algorithm name recorded in the object"
    )
    _series_uid_option(labels)
    labels.set_defaults(func=_convert_labels)


def _series_uid_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--series-uid",
        metavar="UID",
        help="SeriesInstanceUID to use when the folder holds several series",
    )


def _mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--series",
        required=True,
        type=Path,
        metavar="SERIES_DIR",
        help="folder with the referenced image series",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="OUT_DIR", help="output folder")
    parser.add_argument(
        "--labelmap",
        type=Path,
        metavar="FILE",
        help="label map (region2MaskValueMap.txt or JSON): also write labels.nii.gz, labels.json",
    )
    _series_uid_option(parser)


def _convert_series(args: argparse.Namespace) -> int:
    from xnat_ml.imaging.series import load_series, save_nifti

    if not args.out.name.endswith((".nii", ".nii.gz")):
        raise XnatMlError(f"output {args.out}: name must end in .nii or .nii.gz")
    series = load_series(args.series_dir, args.series_uid)
    save_nifti(series.to_nifti(), args.out)
    print(f"{args.out}: {series.shape} voxels of {_mm(series)} mm, series {series.series_uid}")
    return 0


def _convert_rtstruct(args: argparse.Namespace) -> int:
    from xnat_ml.imaging.mask_folder import write_mask_folder
    from xnat_ml.imaging.rtstruct import (
        DEFAULT_PLANE_TOLERANCE,
        read_rtstruct,
        rtstruct_to_masks,
    )

    header = read_rtstruct(args.rtstruct)
    series = _referenced_series(args, args.rtstruct, header.referenced_series_uids)
    tolerance = DEFAULT_PLANE_TOLERANCE if args.plane_tolerance is None else args.plane_tolerance
    result = rtstruct_to_masks(
        header, series, plane_tolerance=tolerance, skip_empty=args.skip_empty
    )
    index = write_mask_folder(args.out, result.masks(), series, result.report(), args.labelmap)
    _summarise(args.out, index)
    return 0


def _convert_seg(args: argparse.Namespace) -> int:
    from xnat_ml.imaging.mask_folder import write_mask_folder
    from xnat_ml.imaging.seg import read_seg

    series = _referenced_series(args, args.seg, _seg_series_uids(args.seg))
    masks = read_seg(args.seg, series)
    report = {"seg": str(args.seg), "series_uid": series.series_uid}
    index = write_mask_folder(args.out, masks, series, report, args.labelmap)
    _summarise(args.out, index)
    return 0


def _convert_labels(args: argparse.Namespace) -> int:
    from xnat_ml.imaging.export import export_labels
    from xnat_ml.imaging.labelmap import load_labelmap
    from xnat_ml.imaging.series import load_series

    series = load_series(args.series, args.series_uid)
    labelmap = load_labelmap(args.labelmap)
    out = export_labels(args.labels, series, labelmap, args.out, args.to, args.algorithm)
    print(f"{out}: {args.to.upper()} of {args.labels} on series {series.series_uid}")
    return 0


def _referenced_series(
    args: argparse.Namespace, source: Path, referenced: frozenset[str]
) -> Series:
    """The series named by --series-uid, else the one series the object references, else the
    folder's only series."""
    from xnat_ml.imaging.series import SeriesNotFoundError, load_series

    if args.series_uid or len(referenced) != 1:
        return load_series(args.series, args.series_uid)
    try:
        return load_series(args.series, next(iter(referenced)))
    except SeriesNotFoundError as exc:
        raise XnatMlError(f"{source}: its referenced series is missing: {exc}") from None


def _seg_series_uids(path: Path) -> frozenset[str]:
    """ReferencedSeriesSequence of a SEG (a hint only; read_seg checks the file itself)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return frozenset(str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", []))
    except Exception:  # read_seg reports unreadable files with the precise reason
        return frozenset()


def _summarise(out_dir: Path, index: dict) -> None:
    from xnat_ml.imaging.mask_folder import INDEX_NAME

    for name, file in index["files"].items():
        print(f"{out_dir / file}: {name}")
    if "labels" in index:
        print(f"{out_dir / 'labels.nii.gz'}: composite label map (see labels.json)")
    print(f"{out_dir / INDEX_NAME}: index of {len(index['files'])} masks")


def _mm(series: Series) -> str:
    return "x".join(f"{v:.4g}" for v in series.spacing)
