"""`xnat-ml sample-data`: a small, realistic brain MRI project on any XNAT, made offline."""

from __future__ import annotations

import argparse

from xnat_ml.sample import DEFAULT_PROJECT, DEFAULT_SUBJECTS
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sample-data",
        help="build a sample MRI project (DICOM + ROI collections) on an XNAT server",
        description=(
            "Build a sample brain MRI project on an XNAT server through its REST API: N subjects "
            "made from nilearn's MNI152 template by seeded deformation, intensity and field-of-"
            "view changes, each with a T1w and a T2w DICOM series (imported through the session "
            "import service) and an RTSTRUCT ROI collection outlining grey and white matter. "
            "Needs no network besides the server. Re-running completes or leaves the project."
        ),
    )
    parser.add_argument(
        "--project", default=DEFAULT_PROJECT, help=f"project ID (default: {DEFAULT_PROJECT})"
    )
    parser.add_argument(
        "--subjects",
        type=_positive,
        default=DEFAULT_SUBJECTS,
        help=f"number of subjects (default: {DEFAULT_SUBJECTS})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed: same seed, same images and UIDs (default: 0)"
    )
    add_connection_arguments(parser)
    parser.set_defaults(func=run)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def run(args: argparse.Namespace) -> int:
    from xnat_ml.sample.project import build_sample_project

    with connect_from_args(args) as session:
        sessions = build_sample_project(
            session, args.project, args.subjects, args.seed, progress=print
        )
    made = sum(s.created for s in sessions)
    print(f"project {args.project}: {len(sessions)} subjects ({made} new), each with a session, "
          "T1w and T2w scans and an ROI collection")
    return 0
