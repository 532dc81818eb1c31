"""`make demo` / `python -m xnat_ml.demo`: the embedded server and the annotation loop, end to end.

Starts `xnat-ml serve` (local backend) on a free loopback port with ./demo-data, installs the
shipped Event Service subscription in the sample project, then builds the project through the
REST API (the same calls any XNAT takes): each RTSTRUCT saved as an ROI collection sets off
`roi-to-mask`, which stores the scan's image NIfTI and the collection's label map. The demo waits
for those jobs, prints what the archive now holds and how to pull it, then stops the server
unless `--keep-serving`.
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
    """Subjects, sessions, scans (DICOM file counts, NIfTI files) and ROI collections (label
    map files)."""
    from xnat_ml.layout import DICOM_RESOURCE, LABELMAP_RESOURCE, NIFTI_RESOURCE
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
            scan_uri = f"{uri}/scans/{scan['ID']}"
            labels = {r.get("label"): r for r in list_resources(session, scan_uri)}
            files = int((labels.get(DICOM_RESOURCE) or {}).get("file_count") or 0)
            kind = scan.get("type") or scan.get("series_description") or ""
            nifti = _file_names(session, f"{scan_uri}/resources/{NIFTI_RESOURCE}", labels)
            print(f"    scan {scan['ID']:>3}  {kind:<12} {DICOM_RESOURCE}: {files} files"
                  + (f"  {NIFTI_RESOURCE}: {', '.join(nifti)}" if nifti else ""))  # fmt: skip
        for assessor in list_rows(session, f"{uri}/assessors"):
            roi_uri = f"{uri}/assessors/{assessor['ID']}"
            labels = {r.get("label"): r for r in list_resources(session, roi_uri)}
            made = _file_names(session, f"{roi_uri}/resources/{LABELMAP_RESOURCE}", labels)
            print(f"    ROI collection {assessor['label']} ({assessor.get('xsiType', '')})"
                  + (f"  {LABELMAP_RESOURCE}: {', '.join(made)}" if made else ""))  # fmt: skip


def _file_names(session, resource_uri: str, present: dict) -> list[str]:
    """File names of a resource (empty when the object has no such resource)."""
    from xnat_ml.xnat import list_rows

    if resource_uri.rsplit("/", 1)[1] not in present:
        return []
    return sorted(row["Name"] for row in list_rows(session, f"{resource_uri}/files"))


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


def _install_subscriptions(session, project: str) -> None:
    """What `xnat-ml events install --project P` does: the shipped subscriptions, wrappers on."""
    from xnat_ml.events.install import default_handlers, install_handler
    from xnat_ml.sample.project import ensure_project

    ensure_project(session, project)
    for handler in default_handlers():
        outcome = install_handler(session, project, handler)
        print(f"Event subscription {handler.document['name']!r}: {outcome}")


def _wait_for_jobs(session, project: str, expected: int, timeout: float = 900) -> list[dict]:
    """Poll the project's containers until `expected` exist and none is still running."""
    from xnat_ml.containers.jobs import FINAL_STATUSES

    deadline = time.monotonic() + timeout
    while True:
        jobs = session.get_json("/xapi/containers", query={"project": project})
        running = [j for j in jobs if j["status"] not in FINAL_STATUSES]
        if len(jobs) >= expected and not running:
            return jobs
        if time.monotonic() > deadline:
            raise XnatMlError(
                f"project {project}: {len(running)} roi-to-mask jobs still running after "
                f"{timeout:.0f} s ({len(jobs)} of {expected} launched)"
            )
        time.sleep(0.5)


def _report_jobs(session, jobs: list[dict]) -> None:
    """One line per job; a failed one stops the demo with its log's last lines."""
    for job in sorted(jobs, key=lambda j: j["id"]):
        times = [float(event["time-recorded"]) / 1000 for event in job.get("history") or []]
        took = f" in {times[-1] - times[0]:.1f} s" if len(times) >= 2 else ""
        print(f"  job {job['id']} {job['wrapper-name']}: {job['status']}{took}")
    failed = [j for j in jobs if j["status"] != "Complete"]
    if failed:
        job = failed[0]
        stderr = session.get(f"/xapi/containers/{job['id']}/logs/stderr").text
        tail = "\n".join(stderr.strip().splitlines()[-10:])
        raise XnatMlError(
            f"job {job['id']} ({job['wrapper-name']}): {job['status']}: "
            f"{job.get('message') or 'no message'}; its stderr ends:\n{tail}"
        )


def _run(args: argparse.Namespace, password: str) -> int:
    from xnat_ml.sample import build_sample_project
    from xnat_ml.xnat import connect

    print(f"Starting the embedded XNAT server on {args.data} ...")
    with ServerProcess(args.data, port=args.port, admin_password=password) as server:
        url = server.url
        print(f"Server up at {url}")
        started = time.monotonic()
        with connect(url, ADMIN, password) as session:
            _install_subscriptions(session, args.project)
            before = len(session.get_json("/xapi/containers", query={"project": args.project}))
            print(f"Building sample project {args.project} over REST ...")
            built = build_sample_project(session, args.project, args.subjects, progress=print)
            new = sum(1 for b in built if b.created)
            print(f"(built in {time.monotonic() - started:.1f} s; new ROI collections: {new}, "
                  "waiting for their roi-to-mask jobs)")  # fmt: skip
            jobs = _wait_for_jobs(session, args.project, before + new)
            print(f"Jobs of project {args.project} (all done "
                  f"{time.monotonic() - started:.1f} s after the start):")  # fmt: skip
            _report_jobs(session, jobs)
            print_listing(session, args.project)
            pull = _pull_example(session, url, args.project)
        print(_connection_help(url, password, args.project, args.keep_serving, args.data) + pull)
        if args.keep_serving:
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("\nStopping the server.")
    return 0


def _pull_example(session, url: str, project: str) -> str:
    """A curl line fetching one session's label map, as anyone would over XNAT's REST API."""
    from xnat_ml.layout import LABELMAP_RESOURCE
    from xnat_ml.xnat import list_experiments, list_rows
    from xnat_ml.xnat.uris import experiment_uri

    for row in list_experiments(session, project):
        for assessor in list_rows(session, f"{experiment_uri(row['ID'])}/assessors"):
            files = (f"{url}/data/experiments/{row['ID']}/assessors/{assessor['ID']}"
                     f"/resources/{LABELMAP_RESOURCE}/files")  # fmt: skip
            return (f"\n\nPull a label map over REST (any XNAT takes the same URL):\n\n"
                    f"    curl -u {ADMIN} -o labels.zip '{files}?format=zip'\n")  # fmt: skip
    return ""


if __name__ == "__main__":
    sys.exit(main())
