"""`xnat-ml infer`: a project's model version on one of its sessions, the result stored as an
AI DICOM SEG collection (or written to a folder with --no-store). See docs/inference.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# torch, MONAI and the imaging stack are imported inside the handler: `xnat-ml` registers every
# verb module before dispatching.


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "infer",
        help="run a model version on a session; store the result as a SEG collection",
        description=(
            "Find the session's input images by the model card's input channels and the scan "
            "criteria of the model's dataset definition (or --definition FILE), convert their "
            "DICOM, pull the model version (digests checked) into the cache, run its bundle's "
            "inference.json, and store the result on the source grid as the AI SEG ROI "
            "collection AI_<model>_v<N>_<session> with its LABELMAP resource (Member or Owner). "
            "A rerun replaces its own collection, never a human one. With --no-store --to DIR "
            "the SEG and label map go to DIR and nothing is stored (a Collaborator may do "
            "that). In a Container Service job the server options come from $XNAT_HOST, "
            "$XNAT_USER and $XNAT_PASS."
        ),
    )
    parser.add_argument("--project", required=True, metavar="P", help="project id")
    parser.add_argument("--session", required=True, metavar="S", help="session id or label")
    parser.add_argument(
        "--model", required=True, metavar="NAME[:N]",
        help="model in the project's ML_MODELS (default: its latest version)",
    )  # fmt: skip
    parser.add_argument(
        "--definition", type=Path, metavar="FILE",
        help="dataset definition whose image criteria pick the scans "
        "(default: the definition of the dataset the model was trained on)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument(
        "--no-store", dest="store", action="store_false",
        help="store nothing; write seg.dcm and labelmap/ into --to DIR",
    )  # fmt: skip
    parser.add_argument("--to", type=Path, metavar="DIR", help="folder for --no-store's result")
    parser.add_argument(
        "--cache", type=Path, metavar="DIR",
        help="where pulled model versions are kept (default: ~/.cache/xnat-ml)",
    )  # fmt: skip
    parser.add_argument(
        "--trigger-scan", metavar="SCAN",
        help="the scan whose new DICOM set this run off (the Event Service's infer "
        "subscription): run only when it is one of the model's input images and every input "
        "channel has its scan; otherwise say why, store nothing and succeed",
    )  # fmt: skip
    add_connection_arguments(parser)
    parser.set_defaults(func=_infer)


def _infer(args: argparse.Namespace) -> int:
    import logging

    from xnat_ml.errors import XnatMlError
    from xnat_ml.inference.project_infer import NothingToDo, infer_session

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # a line per copied DICOM module
    if args.to is not None and args.store:
        raise XnatMlError("infer --to DIR: only with --no-store (a stored result goes to XNAT)")
    try:
        with connect_from_args(args) as session:
            done = infer_session(
                session, args.project, args.session, args.model, definition=args.definition,
                device=args.device, store=args.store, to=args.to, cache=args.cache,
                trigger_scan=args.trigger_scan,
            )  # fmt: skip
    except NothingToDo as skipped:
        print(skipped)
        return 0
    used = ", ".join(f"{channel}: scan {scan}" for channel, scan in done.scans.items())
    what = f"model {done.model} v{done.version} on session {done.session_label} ({used})"
    if done.collection_id is None:
        print(f"{what}: SEG and label map written to {args.to}; nothing stored")
    else:
        verb = "replaced" if done.replaced else "stored"
        print(f"{what}: {verb} SEG collection {done.label} ({done.collection_id}) "
              "with its LABELMAP")  # fmt: skip
    return 0
