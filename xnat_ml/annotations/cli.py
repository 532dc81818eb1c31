"""`xnat-ml roi-to-mask`: the step the roi-to-mask command runs inside its container."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# The conversion stack (pydicom, highdicom, nibabel, xnatpy) is imported inside the handler:
# `xnat-ml` registers every verb module before dispatching.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "roi-to-mask",
        help="convert an ROI collection and the scan it annotates (runs against XNAT)",
        description=(
            "Read the series an RTSTRUCT or SEG annotates from the file itself, find that scan in "
            "the session by its SeriesInstanceUID over REST, download its DICOM and the project's "
            "label map (one file of ML_MODELS; without it only per-ROI masks are made), write "
            "per-ROI masks, masks.json and with a label map labels.nii.gz/labels.json into OUT, "
            "and finally upload the image NIfTI as the scan's NIFTI resource (image.nii.gz). "
            "Nothing is uploaded when any step fails. A SEG whose segments are all AUTOMATIC "
            "(a model's output) is skipped: one line, nothing written or uploaded. In a "
            "Container Service job the server options come from $XNAT_HOST, $XNAT_USER and "
            "$XNAT_PASS (an alias token)."
        ),
    )
    parser.add_argument(
        "roi", metavar="ROI", type=Path, help="the RTSTRUCT/SEG file, or a folder holding only it"
    )
    parser.add_argument(
        "--type",
        dest="roi_type",
        required=True,
        choices=("RTSTRUCT", "SEG"),
        help="ROI collection type (the label of its resource)",
    )
    parser.add_argument("--session", required=True, metavar="ID", help="session accession id")
    parser.add_argument("--project", required=True, metavar="P", help="project id")
    parser.add_argument(
        "--labelmap",
        metavar="PATH",
        default="",
        help="label map (region2MaskValueMap.txt or JSON) inside the project's ML_MODELS "
        "resource; a missing file means per-ROI masks only; empty: no label map",
    )
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="mask folder")
    add_connection_arguments(parser)
    parser.set_defaults(func=_roi_to_mask)


def _roi_to_mask(args: argparse.Namespace) -> int:
    from xnat_ml.annotations.roi_to_mask import roi_to_mask

    with connect_from_args(args) as session:
        done = roi_to_mask(
            session, args.roi, args.roi_type, args.session, args.project, args.out,
            args.labelmap or None,
        )  # fmt: skip
    if done is None:
        print(f"{args.roi}: every segment of this SEG is AUTOMATIC (model output, not an "
              "annotation); skipped, nothing stored")
        return 0
    labels = "with label map" if done.labelmap else "no label map"
    print(f"{args.out}: {len(done.index['files'])} masks ({labels}) of scan {done.scan_id}")
    print(f"{done.image_resource}/files/image.nii.gz: image of series {done.series_uid}")
    return 0
