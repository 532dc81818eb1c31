"""`xnat-ml dataset build|list|show|fetch`: dataset versions in a project's ML_DATASETS."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from xnat_ml.cli import add_verb_group
from xnat_ml.errors import XnatMlError
from xnat_ml.xnat.cliargs import add_connection_arguments, connect_from_args

# xnatpy, nibabel and the dataset core are imported inside the handlers: `xnat-ml` registers
# every verb module before dispatching.


def register(subparsers: argparse._SubParsersAction) -> None:
    verbs = add_verb_group(
        subparsers, "dataset", help="build, list, show and fetch datasets of a project",
        description="Datasets: a definition turned into a validated, split MONAI datalist, "
        "stored as versions in the project resource ML_DATASETS (docs/datasets.md).",
    )  # fmt: skip
    build = verbs.add_parser(
        "build", help="build a new version of a dataset",
        description="List the project in bulk, validate every session against the definition, "
        "split by subject and store definition.json, dataset_0.json, report.json and report.md "
        "as ML_DATASETS/NAME/vN (N the next number claimed on the server). Prints the version "
        "written; nothing is written when nothing changed.",
    )  # fmt: skip
    _project(build)
    build.add_argument("--definition", required=True, type=Path, metavar="FILE",
                       help="dataset definition (JSON, docs/datasets.md)")  # fmt: skip
    build.add_argument("--name", required=True, help="dataset name (letters, digits, _ . -)")
    build.add_argument("--dry-run", action="store_true",
                       help="build and print the report, store nothing")  # fmt: skip
    build.add_argument("--strict", action="store_true",
                       help="fail when any session is excluded")  # fmt: skip
    _cache(build)
    build.set_defaults(func=_build)

    listing = verbs.add_parser("list", help="list the datasets and their versions")
    _project(listing)
    listing.set_defaults(func=_list)

    show = verbs.add_parser("show", help="print a version's validation report (report.md)")
    show.add_argument("name", metavar="NAME")
    _project(show)
    show.add_argument("--version", type=int, metavar="N", help="version (default: latest)")
    show.set_defaults(func=_show)

    fetch = verbs.add_parser(
        "fetch", help="download a version's files and write DIR/dataset_0.json",
        description="Download the files a version names into a content-addressed cache "
        "(checked by size and MD5; a second fetch downloads nothing), link them under "
        "DIR/data/... and write DIR/dataset_0.json with paths relative to DIR, ready for "
        "monai.data.load_decathlon_datalist.",
    )  # fmt: skip
    fetch.add_argument("name", metavar="NAME")
    _project(fetch)
    fetch.add_argument("--version", type=int, metavar="N", help="version (default: latest)")
    fetch.add_argument("--to", required=True, type=Path, metavar="DIR", help="destination")
    _cache(fetch)
    fetch.set_defaults(func=_fetch)


def _cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="cache root: DIR/files (fetched files), DIR/inspections (what "
                        "builds read of files), by MD5 (default $XDG_CACHE_HOME/xnat-ml or "
                        "~/.cache/xnat-ml)")  # fmt: skip


def _project(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", required=True, metavar="P", help="project id")
    add_connection_arguments(parser)


def _build(args: argparse.Namespace) -> int:
    from xnat_ml.datasets.project_build import BuildRefused, build_in_project
    from xnat_ml.xnat.roles import require_role

    try:
        text = args.definition.read_bytes()
    except OSError as exc:
        raise XnatMlError(f"dataset definition {args.definition}: {exc.strerror}") from None
    with connect_from_args(args) as session:
        if not args.dry_run:  # a dry run stores nothing: readers may try a definition
            require_role(session, args.project, "Member", "dataset build")
        try:
            done = build_in_project(session, args.project, text, args.name,
                                    source=str(args.definition), dry_run=args.dry_run,
                                    strict=args.strict, cache=args.cache)  # fmt: skip
        except BuildRefused as exc:
            sys.stdout.write(exc.build.report_markdown())
            raise
    summary = done.build.report["summary"]
    if empty := done.build.empty_splits():
        print(f"xnat-ml: warning: dataset {args.name}: no subject in split "
              f"{', '.join(empty)} ({summary['subjects']} subjects in all); add subjects or "
              "change the definition's split", file=sys.stderr)  # fmt: skip
    counts = (f"{summary['included']} sessions in ({summary['subjects']} subjects), "
              f"{summary['excluded']} out")  # fmt: skip
    reads = done.reads or {}
    print(f"files inspected: {reads.get('requests', 0)} requests, {reads.get('from_cache', 0)} "
          f"from the cache, {reads.get('from_records', 0)} image grids from roi-to-mask records")
    where = f"project {args.project} ML_DATASETS/{args.name}"
    if done.dry_run:
        sys.stdout.write(done.contents["report.md"])
        print(f"dry run: {counts}; nothing stored")
    elif done.version is None:
        print(f"{where}/v{done.latest.number}: unchanged ({counts}); no new version")
    else:
        print(f"{where}/v{done.version.number}: written ({counts})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from xnat_ml.datasets.versions import list_versions

    with connect_from_args(args) as session:
        versions = list_versions(session, args.project)
    if not versions:
        print(f"project {args.project}: no datasets")
    for name, found in sorted(versions.items()):
        print(f"{name}: " + ", ".join(f"v{v.number}" for v in found))
    return 0


def _show(args: argparse.Namespace) -> int:
    from xnat_ml.datasets.changes import changes_markdown
    from xnat_ml.datasets.versions import (
        REPORT_MD_FILE,
        changes_before,
        list_versions,
        pick_version,
        read_file,
    )

    with connect_from_args(args) as session:
        versions = list_versions(session, args.project).get(args.name, [])
        version = pick_version(versions, args.project, args.name, args.version)
        sys.stdout.write(f"<!-- {args.name} v{version.number} -->\n")
        sys.stdout.write(read_file(session, args.project, version, REPORT_MD_FILE))
        changed = changes_before(session, args.project, version, versions)
        if changed is not None:
            sys.stdout.write("\n" + changes_markdown(*changed))
    return 0



def _fetch(args: argparse.Namespace) -> int:
    from xnat_ml.datasets.fetch import fetch_dataset

    with connect_from_args(args) as session:
        done = fetch_dataset(session, args.project, args.name, args.to, number=args.version,
                             cache=args.cache)  # fmt: skip
    print(f"{done.datalist}: {done.files} files ({done.downloaded} downloaded, "
          f"{done.bytes_downloaded / 1e6:.1f} MB)")  # fmt: skip
    return 0
