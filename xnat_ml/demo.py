"""`make demo` / `python -m xnat_ml.demo`: the embedded server with a sample project, end to end.

Starts `xnat-ml serve` on a free loopback port with ./demo-data, builds the sample project
through the REST API (the same calls any XNAT takes), prints what the archive now holds and how
to reach it with xnatpy, then stops the server unless `--keep-serving`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from xnat_ml.errors import XnatMlError
from xnat_ml.server.process import ServerProcess

ADMIN = "admin"


def print_listing(session, project: str) -> None:
    """Subjects, sessions, scans (with their DICOM file counts) and ROI collections."""
    from xnat_ml.layout import DICOM_RESOURCE
    from xnat_ml.xnat import list_experiments, list_resources, list_rows
    from xnat_ml.xnat.uris import experiment_uri

    sessions = list_experiments(session, project)
    subjects = {row["subject_label"] for row in sessions}
    print(f"\nProject {project}: {len(subjects)} subjects, {len(sessions)} sessions")
    for row in sorted(sessions, key=lambda r: (r["subject_label"], r["label"])):
        print(f"  subject {row['subject_label']}  session {row['label']} "
              f"({row['ID']}, {row['xsiType']}, {row['date'] or 'no date'})")  # fmt: skip
        uri = experiment_uri(row["ID"])
        for scan in list_rows(session, f"{uri}/scans"):
            resources = list_resources(session, f"{uri}/scans/{scan['ID']}")
            files = sum(int(r.get("file_count") or 0) for r in resources
                        if r.get("label") == DICOM_RESOURCE)  # fmt: skip
            kind = scan.get("type") or scan.get("series_description") or ""
            print(f"    scan {scan['ID']:>3}  {kind:<12} {DICOM_RESOURCE}: {files} files")
        for assessor in list_rows(session, f"{uri}/assessors"):
            print(f"    ROI collection {assessor['label']} ({assessor.get('xsiType', '')})")


def _connection_help(
    url: str, password: str, project: str, keep_serving: bool, data_dir: Path
) -> str:
    reach = (
        "The server keeps running until Ctrl-C."
        if keep_serving
        else "The server stops now; `python -m xnat_ml.demo --keep-serving` keeps it running,\n"
        f"or serve the same archive with `xnat-ml serve --data {data_dir} --port 8080`."
    )
    return f"""
Connect with xnatpy (server at {url}, user {ADMIN}):

    import xnat
    with xnat.connect("{url}", user="{ADMIN}", password="{password}") as session:
        print(session.projects["{project}"].subjects)

or export XNAT_HOST={url} XNAT_USER={ADMIN} XNAT_PASS=... and use xnat_ml.xnat.connect().
{reach}"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xnat_ml.demo",
        description="Start the embedded XNAT server, build the sample project, list it.",
    )
    parser.add_argument("--data", type=Path, default=Path("demo-data"),
                        help="archive folder (default ./demo-data; kept between runs)")
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    parser.add_argument("--project", default="SAMPLE", help="sample project ID (default SAMPLE)")
    parser.add_argument("--subjects", type=int, default=4, help="sample subjects (default 4)")
    parser.add_argument("--keep-serving", action="store_true",
                        help="keep the server running after the listing, until Ctrl-C")
    args = parser.parse_args(argv)
    password = os.environ.get("XNAT_ML_ADMIN_PASSWORD", "admin")
    # `kill` ends the demo like Ctrl-C does, so the server child is stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return _run(args, password)
    except XnatMlError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, password: str) -> int:
    from xnat_ml.sample import build_sample_project
    from xnat_ml.xnat import connect

    print(f"Starting the embedded XNAT server on {args.data} ...")
    with ServerProcess(args.data, port=args.port, admin_password=password) as server:
        url = server.url
        print(f"Server up at {url}; building sample project {args.project} over REST ...")
        started = time.monotonic()
        with connect(url, ADMIN, password) as session:
            build_sample_project(session, args.project, args.subjects, progress=print)
            print(f"(built in {time.monotonic() - started:.1f} s)")
            print_listing(session, args.project)
        print(_connection_help(url, password, args.project, args.keep_serving, args.data))
        if args.keep_serving:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nStopping the server.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
